'use strict'
/** The CLI's commands. Each returns an exit code (0 ok, 1 differences, 2 error). */
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { showProgress } = require('./progress')
const { redactUri } = require('../redact')

function baseOptions (values, extra = {}) {
  // The CLI runs its own jobs: the app's schedule settings do not apply here.
  // Nor the app's process handling: a dir in use fails at once, and other instances' dirs are
  // left to the app (or to `drain --data-dir` on each).
  const opts = { enabled: true, logLevel: 'warn', fullSyncOnStart: false, fullSyncCron: null, lockWaitMs: 0, adoptIntervalMs: 0, ...extra }
  if (values.local) opts.localUri = values.local
  if (values.atlas) opts.atlasUri = values.atlas
  if (values['data-dir']) opts.dataDir = values['data-dir']
  return opts
}

function collectionsOf (values) {
  return values.collections ? values.collections.split(',').map((s) => s.trim()).filter(Boolean) : undefined
}

function timeoutOf (values) {
  const n = values['timeout-ms'] === undefined ? 600000 : Number(values['timeout-ms'])
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--timeout-ms must be a positive integer, got ${JSON.stringify(values['timeout-ms'])}`)
  return n
}

function quietLogger (io) {
  return { debug () {}, info () {}, warn: (m) => io.stderr.write(`${m}\n`), error: (m) => io.stderr.write(`${m}\n`) }
}

/** A throwaway engine for read-only work: its own temp data dir, nothing persisted. */
async function readOnlySync (values, io) {
  const { createSync } = require('../..')
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-cli-'))
  const sync = await createSync(baseOptions(values, { dataDir, persistQueue: false, logger: quietLogger(io) }))
  return {
    sync,
    async dispose () {
      await sync.close({ drainTimeoutMs: 0 })
      fs.rmSync(dataDir, { recursive: true, force: true })
    }
  }
}

async function viaHttp (values, io, method, route, body) {
  const token = values.token || io.env.SYNC_ADMIN_TOKEN
  const url = `${values.url.replace(/\/$/, '')}${route}`
  const res = await fetch(url, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined
  })
  const text = await res.text()
  let json
  try { json = JSON.parse(text) } catch { json = { raw: text } }
  if (res.status >= 400 && res.status !== 503) throw new Error(`${method} ${route} answered ${res.status}: ${json.error || text.slice(0, 200)}`)
  return json
}

function printReport (snap, values, io) {
  if (values.json) {
    io.stdout.write(`${JSON.stringify({ ok: snap.state === 'done', job: snap })}\n`)
    return
  }
  io.stdout.write(`${snap.kind} ${snap.state}: ${snap.docsScanned} documents scanned, ${snap.differences} differences` +
    (snap.kind === 'fullSync' ? `, ${snap.repairsQueued} repairs queued` : '') + '\n')
  for (const r of snap.reports) {
    const mark = toRepair(r) === 0 ? '✓' : '✗'
    const scope = r.scope ? ` scope=${JSON.stringify(r.scope)}` : ''
    const kept = r.extrasReported ? ` (${r.extrasReported} reported, left on Atlas)` : ''
    io.stdout.write(`  ${mark} ${r.collection}: local=${r.localCount} atlas=${r.atlasCount} missing=${r.missingOnAtlas} extra=${r.extraOnAtlas} different=${r.different}` +
      ` extras-policy=${r.extrasPolicy}${kept}${scope}\n`)
  }
  if (snap.error) io.stdout.write(`  error: ${snap.error}\n`)
}

async function runJob (job, values, io) {
  const progress = values.json ? { stop () {} } : showProgress(job, io.stderr)
  const onSigint = () => job.cancel()
  process.once('SIGINT', onSigint)
  try {
    return await job.done
  } finally {
    process.off('SIGINT', onSigint)
    progress.stop()
  }
}

/** Differences a full sync would repair: extras under `report` are listed, never repaired. */
function toRepair (r) {
  return r.missingOnAtlas + r.extraOnAtlas + r.different - (r.extrasReported || 0)
}

function exitCodeFor (snap) {
  if (snap.state === 'failed' || snap.state === 'cancelled') return 2
  return snap.reports.some((r) => toRepair(r) > 0) ? 1 : 0
}

/** verify: read-only comparison; exit 1 when anything differs. */
async function verify (values, io) {
  if (values.url) {
    const { job } = await viaHttp(values, io, 'GET', `/verify?wait=true${values.collections ? `&collections=${encodeURIComponent(values.collections)}` : ''}`)
    printReport(job, values, io)
    return exitCodeFor(job)
  }
  const { sync, dispose } = await readOnlySync(values, io)
  try {
    const snap = await runJob(sync.verify({ collections: collectionsOf(values), waitMs: 0 }), values, io)
    printReport(snap, values, io)
    return exitCodeFor(snap)
  } finally {
    await dispose()
  }
}

/** full-sync: verify + repair through the queue, then drain the repairs. */
async function fullSync (values, io) {
  if (values.url) {
    const { job } = await viaHttp(values, io, 'POST', '/full', { collections: collectionsOf(values) })
    printReport(job, values, io)
    return job.state === 'failed' ? 2 : 0
  }
  const { createSync } = require('../..')
  const sync = await createSync(baseOptions(values, { logger: quietLogger(io) }))
  try {
    const snap = await runJob(sync.fullSync({ collections: collectionsOf(values), waitMs: 0 }), values, io)
    const drained = await sync.flush({ timeoutMs: timeoutOf(values) })
    printReport(snap, values, io)
    if (!drained) throw new Error('repairs were queued but not all applied before --timeout-ms; they stay in the journal')
    return snap.state === 'done' ? 0 : 2
  } finally {
    await sync.close({ drainTimeoutMs: 0 })
  }
}

/** drain: empty the journal of the data dir into Atlas (the app must be stopped). */
async function drain (values, io) {
  const { createSync } = require('../..')
  const sync = await createSync(baseOptions(values, { logger: quietLogger(io), workerInterval: 0 }))
  try {
    const start = sync.metrics()
    const drained = await sync.flush({ timeoutMs: timeoutOf(values) })
    const end = sync.metrics()
    const result = { ok: drained, recovered: start.journal.recovered, applied: end.applied.total, deadLetters: end.deadLetters, backlog: end.backlog.total }
    if (values.json) io.stdout.write(`${JSON.stringify(result)}\n`)
    else io.stdout.write(`${drained ? 'drained' : 'NOT drained'}: ${result.recovered} recovered marks, ${result.applied} documents applied, ${result.deadLetters} dead letters, backlog ${result.backlog}\n`)
    return drained ? 0 : 2
  } finally {
    await sync.close({ drainTimeoutMs: 0 })
  }
}

/** status: connectivity and counts (or a running app's metrics with --url). */
async function status (values, io) {
  if (values.url) {
    const metrics = await viaHttp(values, io, 'GET', '/metrics')
    const health = await viaHttp(values, io, 'GET', '/health')
    if (values.json) io.stdout.write(`${JSON.stringify({ ok: true, health, metrics })}\n`)
    else {
      io.stdout.write(`health: ${health.status}${health.reasons && health.reasons.length ? ` (${health.reasons.join('; ')})` : ''}\n`)
      io.stdout.write(`backlog: ${metrics.backlog.total} (memory ${metrics.backlog.memory}, disk ${metrics.backlog.disk}) · applied ${metrics.applied.total} · dead letters ${metrics.deadLetters} · Atlas ${metrics.atlas.connected ? 'connected' : 'unreachable'}\n`)
    }
    return health.status === 'unhealthy' ? 2 : 0
  }
  const { loadConfig } = require('../config')
  const cfg = loadConfig(baseOptions(values))
  const { MongoClient } = require('mongodb')
  const side = async (name, uri, db) => {
    const client = new MongoClient(uri, { serverSelectionTimeoutMS: 5000 })
    try {
      const database = client.db(db)
      const names = (await database.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).filter((n) => !n.startsWith('system.'))
      const counts = {}
      for (const n of names.sort()) counts[n] = await database.collection(n).estimatedDocumentCount()
      return { name, uri: redactUri(uri), db, reachable: true, counts }
    } catch (e) {
      return { name, uri: redactUri(uri), db, reachable: false, error: e.message }
    } finally {
      await client.close().catch(() => {})
    }
  }
  const [local, atlas] = await Promise.all([side('local', cfg.localUri, cfg.localDb), side('atlas', cfg.atlasUri, cfg.atlasDb)])
  const journal = inspectJournal(cfg.dataDir)
  const result = { ok: local.reachable && atlas.reachable, local, atlas, journal }
  if (values.json) {
    io.stdout.write(`${JSON.stringify(result)}\n`)
  } else {
    for (const s of [local, atlas]) io.stdout.write(`${s.reachable ? '✓' : '✗'} ${s.name} ${s.uri}${s.reachable ? '' : `: ${s.error}`}\n`)
    const names = [...new Set([...Object.keys(local.counts || {}), ...Object.keys(atlas.counts || {})])].sort()
    for (const n of names) io.stdout.write(`  ${n}: local=${local.counts?.[n] ?? '-'} atlas=${atlas.counts?.[n] ?? '-'}\n`)
    io.stdout.write(`data dir ${cfg.dataDir}: ${journal.exists ? `${journal.bytes} journal bytes${journal.lockedBy ? `, in use by ${journal.lockedBy}` : ''}` : 'absent'}\n`)
  }
  return result.ok ? 0 : 2
}

function inspectJournal (dir) {
  const jdir = path.join(dir, 'journal')
  if (!fs.existsSync(jdir)) return { exists: false, dir }
  let bytes = 0
  for (const f of fs.readdirSync(jdir)) {
    try { bytes += fs.statSync(path.join(jdir, f)).size } catch { /* raced with deletion */ }
  }
  let lockedBy = null
  try { lockedBy = fs.readFileSync(path.join(jdir, 'LOCK'), 'utf8').trim() || null } catch { /* no holder recorded */ }
  return { exists: true, dir, bytes, lockedBy }
}

module.exports = { status, verify, 'full-sync': fullSync, drain }
