'use strict'
// Runs inside a freshly installed app on the emulated platform (wine /
// qemu), with that platform's Node: `node probe.js journal|recover`.
// journal: load dualsync, open an engine on the data dir, journal a mark per
//          document id (worker paused), then exit without close(): like a
//          killed app, nothing was sent and everything is on disk.
// recover: reopen the same data dir: the marks come back from the journal and
//          are synced to Atlas; scripts/test-platforms.js then checks that
//          Atlas equals local.
// Prints one JSON line; exits non-zero with the reason on any failure.
// Environment: PROBE_LOCAL, PROBE_ATLAS (URIs with the db), PROBE_DATA_DIR
// (default %APPDATA%\Bomba POS\data on Windows), PROBE_IDS (comma-separated).

const path = require('node:path')

function dataDir () {
  if (process.env.PROBE_DATA_DIR) return process.env.PROBE_DATA_DIR
  if (process.platform === 'win32') return path.join(process.env.APPDATA, 'Bomba POS', 'data')
  return path.join(process.cwd(), 'Bomba POS', 'data')
}

async function main (phase) {
  const lines = []
  const keep = (level) => (m) => lines.push(`${level} ${m}`)
  const logger = { debug: keep('debug'), info: keep('info'), warn: keep('warn'), error: keep('error') }
  const { createSync } = require('dualsync')
  const dir = dataDir()
  const ids = process.env.PROBE_IDS.split(',')
  const options = {
    enabled: true,
    localUri: process.env.PROBE_LOCAL,
    atlasUri: process.env.PROBE_ATLAS,
    dataDir: dir,
    fsyncIntervalMs: 0,
    logger,
    logLevel: 'debug'
  }
  const sync = await createSync(options)
  // The addon is loaded by createSync; which file it was shows the package npm picked.
  const loadedFrom = Object.keys(require.cache).find((f) => f.endsWith('.node'))
  if (!loadedFrom) throw new Error('no .node file in require.cache after createSync')
  const out = { phase, platform: `${process.platform}-${process.arch}`, node: process.version, binary: loadedFrom, dataDir: dir }
  if (phase === 'journal') {
    sync.pause()
    for (const id of ids) sync.enqueue({ collection: 'bills', id })
    const j = sync.metrics().journal
    if (!j.persist || j.end === 0) throw new Error(`marks were not journaled: ${JSON.stringify(j)}`)
    out.journalEnd = j.end
    // One process per data dir: a second engine on it is refused (the platform's file lock).
    const second = await createSync({ ...options, lockWaitMs: 0 }).then(() => null, (e) => e)
    if (!second || second.code !== 'ERR_SYNC_LOCK_TIMEOUT') throw new Error(`a second engine on ${dir} was not refused: ${second && second.message}`)
    out.refused = second.message
  } else if (phase === 'recover') {
    out.recovered = sync.metrics().journal.recovered
    if (out.recovered < ids.length) throw new Error(`recovered ${out.recovered} marks from the journal, expected at least ${ids.length}`)
    out.flushed = await sync.flush({ timeoutMs: 120000 })
    if (!out.flushed) throw new Error(`flush did not finish: ${JSON.stringify(sync.health())}`)
    out.drained = await sync.close()
  } else {
    throw new Error(`unknown phase ${phase} (expected journal or recover)`)
  }
  const crlf = lines.filter((l) => l.includes('\r'))
  if (crlf.length) throw new Error(`log lines with CR: ${JSON.stringify(crlf)}`)
  out.logLines = lines.length
  process.stdout.write(JSON.stringify(out) + '\n')
  // journal: leave without close(), as a killed app would.
  process.exit(0)
}

main(process.argv[2]).catch((e) => {
  process.stdout.write(JSON.stringify({ error: String((e && e.stack) || e), code: e && e.code }) + '\n')
  process.exit(1)
})
