'use strict'
// Child process for cli.test.js: an "app" that journals marks while Atlas is down and then
// exits, leaving a backlog in its data dir for `dualsync drain`.
// Usage: node enqueue-offline.js <localUri> <atlasUri> <dataDir> <collection> <ids as JSON>
// Prints {enqueued, backlog, applied} as JSON on stdout.
const { createSync } = require('../../index.js')

async function main () {
  const [localUri, atlasUri, dataDir, collection, idsJson] = process.argv.slice(2)
  const sync = await createSync({ enabled: true, localUri, atlasUri, dataDir, workerInterval: 0, logLevel: 'error' })
  const enqueued = sync.enqueue(JSON.parse(idsJson).map((id) => ({ collection, id })))
  const m = sync.metrics()
  process.stdout.write(`${JSON.stringify({ enqueued, backlog: m.backlog.total, applied: m.applied.total })}\n`)
  await sync.close({ drainTimeoutMs: 0 })
}

main().then(() => process.exit(0), (e) => {
  process.stderr.write(`${e && e.stack ? e.stack : e}\n`)
  process.exit(1)
})
