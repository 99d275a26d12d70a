'use strict'
// lag: end-to-end lag (enqueue → applied on Atlas, the engine's own `lagMs` histogram) while
// writes arrive at 25 %, 50 % and 75 % of the drain throughput measured by `drain` with the
// default settings (or, if `drain` did not run in this invocation, measured here the same way).
// Each phase uses a fresh engine, so its histogram holds that phase only.

const fs = require('node:fs')
const path = require('node:path')
const { connect, prepareCollection } = require('../lib/servers')
const { openSync } = require('../lib/engine')
const { makeDoc } = require('../lib/docs')
const { resultsDir } = require('../lib/results')
const { round } = require('../lib/stats')

const COLL = 'lag_docs'
const TICK_MS = 20

/** Drain rate with default settings: from this run's drain result, else a short drain here. */
async function maxRate ({ smoke, pair, local, log }) {
  const file = path.join(resultsDir(smoke), 'drain.json')
  if (process.env.BENCH_RUN_ID && fs.existsSync(file)) {
    const d = JSON.parse(fs.readFileSync(file, 'utf8'))
    if (d.runId === process.env.BENCH_RUN_ID && d.numbers && d.numbers.defaultDocsPerSec) {
      return { docsPerSec: d.numbers.defaultDocsPerSec, source: 'drain scenario of this run (defaults)' }
    }
  }
  const n = smoke ? 2000 : 6000
  const docs = Array.from({ length: n }, (_, i) => makeDoc(1e8 + i))
  const coll = local.db('bench').collection(COLL)
  for (let i = 0; i < n; i += 1000) await coll.insertMany(docs.slice(i, i + 1000))
  const sync = await openSync(pair)
  sync.pause()
  sync.enqueue(docs.map((d) => ({ collection: COLL, id: d._id })))
  const t0 = performance.now()
  sync.resume()
  const ok = await sync.flush({ timeoutMs: 300000 })
  const sec = (performance.now() - t0) / 1000
  await sync.close({ drainTimeoutMs: 1000 })
  if (!ok) throw new Error('lag: calibration drain did not finish')
  log(`calibration drain: ${round(n / sec)} docs/s`)
  return { docsPerSec: n / sec, source: `measured here: drain of ${n} docs, default settings` }
}

async function phase ({ pair, local, rate, seconds, seq }) {
  const sync = await openSync(pair)
  const coll = local.db('bench').collection(COLL)
  // warm connections so the first marks do not carry connection setup
  const warm = makeDoc(seq.next++)
  await coll.insertOne(warm)
  sync.enqueue({ collection: COLL, id: warm._id })
  await sync.flush({ timeoutMs: 30000 })
  const base = sync.metrics().lagMs.count
  let sent = 0
  let maxBacklog = 0
  let behind = 0
  const t0 = performance.now()
  const end = t0 + seconds * 1000
  const sampler = setInterval(() => {
    const b = sync.metrics().backlog.total
    if (b > maxBacklog) maxBacklog = b
  }, 250)
  while (performance.now() < end) {
    const due = Math.floor(((performance.now() - t0) / 1000) * rate) - sent
    if (due > 0) {
      const docs = Array.from({ length: due }, () => makeDoc(seq.next++))
      await coll.insertMany(docs, { ordered: false })
      sync.enqueue(docs.map((d) => ({ collection: COLL, id: d._id })))
      sent += due
    }
    const wait = TICK_MS - ((performance.now() - t0) % TICK_MS)
    if (due > rate * TICK_MS / 1000 * 3) behind++ // the writer itself fell behind its schedule
    await new Promise((resolve) => setTimeout(resolve, wait))
  }
  const writeSec = (performance.now() - t0) / 1000
  const backlogAtEnd = sync.metrics().backlog.total
  const t1 = performance.now()
  const drained = await sync.flush({ timeoutMs: 300000 })
  const tailSec = (performance.now() - t1) / 1000
  clearInterval(sampler)
  const m = sync.metrics()
  await sync.close({ drainTimeoutMs: 1000 })
  return {
    targetRate: rate,
    achievedRate: sent / writeSec,
    writes: sent,
    seconds: writeSec,
    writerBehindTicks: behind,
    lagMs: m.lagMs,
    lagSamples: m.lagMs.count - base,
    maxBacklog,
    backlogAtEnd,
    tailDrainSec: tailSec,
    drained
  }
}

async function run ({ smoke, pair, log }) {
  const seconds = smoke ? 3 : 20
  const local = await connect(pair.local.uri)
  const atlas = await connect(pair.atlas.uri)
  await prepareCollection(pair.local, local, 'bench', COLL)
  await prepareCollection(pair.atlas, atlas, 'bench', COLL)
  const max = await maxRate({ smoke, pair, local, log })
  const seq = { next: 0 }
  const phases = []
  for (const f of [0.25, 0.5, 0.75]) {
    const r = await phase({ pair, local, rate: f * max.docsPerSec, seconds, seq })
    phases.push({ fraction: f, ...r })
    log(`${f * 100}%: ${round(r.achievedRate)} writes/s, lag p50 ${r.lagMs.p50} ms p99 ${r.lagMs.p99} ms, max backlog ${r.maxBacklog}`)
  }
  await local.close()
  await atlas.close()
  return {
    params: { secondsPerPhase: seconds, fractions: [0.25, 0.5, 0.75], maxRateSource: max.source, engine: 'defaults', writer: `driver insertMany + enqueue every ${TICK_MS} ms` },
    numbers: { maxDocsPerSec: max.docsPerSec, phases },
    goals: [],
    table: {
      columns: ['load', 'target writes/s', 'achieved writes/s', 'lag p50 ms', 'lag p95 ms', 'lag p99 ms', 'lag max ms', 'max backlog', 'drain after writes stopped s'],
      rows: phases.map((p) => [`${p.fraction * 100}%`, round(p.targetRate), round(p.achievedRate), p.lagMs.p50, p.lagMs.p95, p.lagMs.p99, p.lagMs.max, p.maxBacklog, round(p.tailDrainSec)])
    },
    chart: {
      title: 'lag: enqueue → on Atlas, ms (p50 / p99)',
      unit: 'ms',
      groups: phases.map((p) => ({ label: `${p.fraction * 100}% load`, bars: [{ label: 'p50', value: p.lagMs.p50 }, { label: 'p99', value: p.lagMs.p99 }] }))
    },
    notes: [
      `100 % = ${round(max.docsPerSec)} docs/s (${max.source}). Lag is the engine's histogram (1 ms resolution) from enqueue to the batch's acknowledgement by Atlas; with the default 100 ms worker interval a lone write waits up to one interval before it is sent.`
    ]
  }
}

module.exports = {
  name: 'lag',
  title: 'Sync lag under steady load',
  goal: 'report lag p50/p99 at 25/50/75 % of the measured drain throughput (no numeric goal)',
  run
}
