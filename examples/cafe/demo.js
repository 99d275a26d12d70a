'use strict'
// `npm run demo`: a café server with dualsync, real traffic over HTTP, an
// Atlas outage, the backlog draining once Atlas is back, and a verify report
// proving local == Atlas. Uses two local test servers unless
// MONGODB_LOCAL_URI and MONGODB_ATLAS_URI are set.
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const mongoose = require('mongoose')
const { createSync } = require('../..')
const { defineModels } = require('./models')
const { createApp } = require('./app')

const PHASE_MS = Number(process.env.DEMO_PHASE_MS || 8000)
const WORKERS = Number(process.env.DEMO_WORKERS || 4)
const tty = process.stdout.isTTY
const say = (line) => process.stdout.write(`${tty ? '\r\x1b[2K' : ''}${line}\n`)

async function servers () {
  if (process.env.MONGODB_LOCAL_URI && process.env.MONGODB_ATLAS_URI) {
    return { localUri: process.env.MONGODB_LOCAL_URI, atlasUri: process.env.MONGODB_ATLAS_URI, pair: null }
  }
  const testbed = require('../../scripts/testbed.js')
  say('starting two local test servers ("local" and "Atlas")…')
  const pair = await testbed.startPair()
  return { localUri: `${pair.local.uri}/cafe`, atlasUri: `${pair.atlas.uri}/cafe`, pair }
}

function progress (sync, stats, phase) {
  const m = sync.metrics()
  const rate = stats.writes / Math.max(1, (Date.now() - stats.since) / 1000)
  return `[${phase}] app requests ${stats.requests} (${rate.toFixed(0)}/s, ${stats.errors} errors) · backlog ${m.backlog.total}` +
    ` (disk ${m.backlog.disk}) · applied ${m.applied.total} · lag p99 ${m.lagMs.p99} ms · Atlas ${m.atlas.connected ? 'connected' : 'UNREACHABLE'}`
}

async function customer (base, menuUser, stats, stop) {
  const call = async (method, url, body) => {
    const res = await fetch(`${base}${url}`, { method, headers: { 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined })
    stats.requests++
    if (!res.ok) { stats.errors++; return null }
    stats.writes++
    return res.json()
  }
  let n = 0
  while (!stop.now) {
    const s = await call('POST', '/sessions', { table: 1 + (n % 12), guests: 1 + (n % 4), user: menuUser })
    if (!s) continue
    const orders = []
    for (let k = 0; k < 2 + (n % 3); k++) {
      const o = await call('POST', `/sessions/${s.session}/orders`, { items: [n + k, n + k + 1] })
      if (o) orders.push(o.order)
    }
    if (orders[0]) await call('POST', `/orders/${orders[0]}/serve`)
    if (orders[1] && n % 3 === 0) await call('POST', `/orders/${orders[1]}/cancel`)
    await call('POST', `/sessions/${s.session}/pay`, { method: n % 2 ? 'card' : 'cash', tips: n % 5 })
    if (n % 10 === 0) await call('DELETE', '/orders/cancelled')
    if (n % 25 === 0) await call('POST', '/menu/daily-special', { names: [`special-${n}-a`, `special-${n}-b`] })
    n++
  }
}

async function traffic (base, userId, sync, ms, phase) {
  const stats = { requests: 0, writes: 0, errors: 0, since: Date.now() }
  const stop = { now: false }
  const workers = Array.from({ length: WORKERS }, () => customer(base, userId, stats, stop))
  const timer = setInterval(() => {
    const line = progress(sync, stats, phase)
    if (tty) process.stdout.write(`\r\x1b[2K${line}`)
    else say(line)
  }, tty ? 250 : 2000)
  await new Promise((resolve) => setTimeout(resolve, ms))
  stop.now = true
  await Promise.all(workers)
  clearInterval(timer)
  say(progress(sync, stats, phase))
  return stats
}

async function main () {
  const { localUri, atlasUri, pair } = await servers()
  const token = crypto.randomBytes(12).toString('hex')
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-demo-'))
  const sync = await createSync({ enabled: true, localUri, atlasUri, dataDir, adminToken: token, workerInterval: 50, connectTimeoutMs: 2000, backoffMaxMs: 2000 })
  mongoose.plugin(sync.plugin)
  const models = defineModels(mongoose)
  await mongoose.connect(localUri)
  await models.MenuItem.insertMany(['espresso', 'latte', 'tea', 'croissant', 'cake'].map((name, i) => ({ name, price: 2 + i })))
  const user = await models.User.create({ name: 'Rania', role: 'cashier', pin: '4321' })
  const server = createApp({ models, sync }).listen(Number(process.env.DEMO_PORT || 0), '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  const base = `http://127.0.0.1:${server.address().port}`
  // The token goes in the #fragment: the browser never sends it, so no log sees it.
  const dashboard = `${base}/api/sync/dashboard#token=${token}`
  say(`café app on ${base} · dashboard ${dashboard}`)

  await traffic(base, user._id, sync, PHASE_MS, 'normal')
  if (pair) {
    say('── Atlas goes down: the café keeps serving; marks pile up in the journal ──')
    await pair.atlas.stop()
    await traffic(base, user._id, sync, PHASE_MS, 'outage')
    say('── Atlas is back: the backlog drains ──')
    await pair.atlas.start()
    await traffic(base, user._id, sync, PHASE_MS / 2, 'recovery')
  } else {
    say('(external servers given: skipping the simulated outage)')
    await traffic(base, user._id, sync, PHASE_MS, 'steady')
  }
  const t0 = Date.now()
  const drained = await sync.flush({ timeoutMs: 300000 })
  say(`drained: ${drained} in ${Date.now() - t0} ms`)

  const report = await sync.verify().done
  say(`verify ${report.state}: ${report.docsScanned} documents compared document by document`)
  for (const r of report.reports) {
    const ok = r.missingOnAtlas + r.extraOnAtlas + r.different === 0
    say(`  ${ok ? '✓' : '✗'} ${r.collection.padEnd(10)} local=${r.localCount} atlas=${r.atlasCount} missing=${r.missingOnAtlas} extra=${r.extraOnAtlas} different=${r.different}`)
  }
  const m = sync.metrics()
  say(`totals: ${m.enqueued} marks, ${m.coalesced} coalesced, ${m.applied.upserts} upserts + ${m.applied.deletes} deletes on Atlas, ${m.failures.transient} transient failures retried, ${m.deadLetters} dead letters`)
  say(`local == Atlas: ${report.differences === 0 ? 'YES' : 'NO'}`)
  say(`dashboard: ${dashboard}`)

  const hold = tty && !process.env.CI && process.env.DEMO_EXIT !== '1'
  if (hold) {
    say('the app keeps running for the dashboard; press Ctrl+C to exit')
    await new Promise((resolve) => process.once('SIGINT', resolve))
  }
  server.close()
  await mongoose.disconnect()
  await sync.close()
  if (pair) await pair.stop()
  fs.rmSync(dataDir, { recursive: true, force: true })
  process.exitCode = report.differences === 0 && drained ? 0 : 1
}

main().catch((e) => {
  console.error(`demo failed: ${e.stack || e}`)
  process.exit(2)
})
