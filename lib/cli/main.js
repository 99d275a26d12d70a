#!/usr/bin/env node
'use strict'
/**
 * `npx dualsync <command>`: status | verify | full-sync | drain.
 * Configured from the same env vars as the app (plus --local/--atlas).
 * Exit codes: 0 consistent / done, 1 differences found, 2 error.
 */
const { parseArgs } = require('node:util')
const { scrub } = require('../redact')

const USAGE = `Usage: dualsync <command> [options]

Commands:
  status      connectivity, document counts on both sides, backlog of the data dir
              (or of a running app with --url)
  verify      compare local and Atlas document by document (read-only)
  full-sync   verify and repair every difference through the sync queue
  drain       send everything left in the journal of SYNC_DATA_DIR to Atlas, then exit

Options:
  --local URI          local MongoDB URI (default: MONGODB_LOCAL_URI)
  --atlas URI          Atlas URI (default: MONGODB_ATLAS_URI)
  --data-dir DIR       journal directory (default: SYNC_DATA_DIR or ./.dualsync)
  --collections a,b    only these collections (verify, full-sync)
  --url URL            admin router of a running app (e.g. http://localhost:5000/api/sync)
  --token TOKEN        bearer token for --url (default: SYNC_ADMIN_TOKEN)
  --timeout-ms N       give up after N ms (drain, full-sync; default 600000)
  --json               machine-readable output on stdout
  -h, --help           this help

Exit codes: 0 consistent / done, 1 differences found, 2 error.`

const OPTIONS = {
  local: { type: 'string' },
  atlas: { type: 'string' },
  'data-dir': { type: 'string' },
  collections: { type: 'string' },
  url: { type: 'string' },
  token: { type: 'string' },
  'timeout-ms': { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false }
}

/**
 * Runs the CLI.
 * @param {string[]} argv arguments after the script name
 * @param {{stdout: NodeJS.WriteStream, stderr: NodeJS.WriteStream, env: NodeJS.ProcessEnv}} io
 * @returns {Promise<number>} exit code
 */
async function main (argv, io = { stdout: process.stdout, stderr: process.stderr, env: process.env }) {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true })
  } catch (e) {
    io.stderr.write(`dualsync: ${e.message}\n\n${USAGE}\n`)
    return 2
  }
  const { values, positionals } = parsed
  const command = positionals[0]
  if (values.help || !command) {
    io.stdout.write(`${USAGE}\n`)
    return command || values.help ? 0 : 2
  }
  const commands = require('./commands')
  const fn = commands[command]
  if (!fn) {
    io.stderr.write(`dualsync: unknown command "${command}"\n\n${USAGE}\n`)
    return 2
  }
  const secrets = [values.local, values.atlas, io.env.MONGODB_LOCAL_URI, io.env.MONGODB_ATLAS_URI]
  try {
    return await fn(values, io)
  } catch (e) {
    const message = scrub(e && e.message ? e.message : String(e), secrets)
    if (values.json) io.stdout.write(`${JSON.stringify({ ok: false, error: message })}\n`)
    io.stderr.write(`dualsync ${command}: ${message}\n`)
    return 2
  }
}

module.exports = { main, USAGE }

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code })
}
