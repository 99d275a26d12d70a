'use strict'
// catchup: a day offline (issue 13, items 2 and 3). A backlog of marks drains to Atlas
// through the `rtt60-2mbps` link profile (bench/lib/link.js):
//   1. catch-up alone: time to empty, bytes on the link per document (proxy counters), and
//      what wire compression each side negotiates (the servers' hello answers; the bytes say
//      whether the engine's traffic is compressed);
//   2. the café workload (bench/lib/cafe.js) while the same backlog drains vs with sync
//      paused, in alternating windows of the same run: request latency (median, p99) and
//      throughput. Both windows have the plugin on; only the drain differs. Two sets: the
//      test bed as it is, then with the "Atlas" server and the link proxy at the lowest CPU
//      priority, since a café PC does not run them (both reported, with the CPU each side
//      used; the goal is judged on all windows pooled).

const { Mongoose } = require('mongoose')
const { connect, prepareCollection, resetCollection } = require('../lib/servers')
const { openSync, markAll } = require('../lib/engine')
const { seed } = require('../lib/docs')
const { round, summarize } = require('../lib/stats')
const { profile, startLinkProcess, bytes } = require('../lib/link')
const { cafeModels, runFor } = require('../lib/cafe')
const { compressionReport } = require('../lib/compression')
const { lowestPriority, serverTicks, threadTicks } = require('../lib/priority')

const COLL = 'catchup_docs'
const LINK = 'rtt60-2mbps'
const GOAL_APP = 1.1
const SETS = ['asIs', 'atlasNiced']

function params (smoke) {
  return smoke
    ? { marks: 4000, windowSec: 2, windowPairs: 2, clients: 2, link: LINK }
    : { marks: 100000, windowSec: 8, windowPairs: 3, clients: 2, link: LINK }
}

async function run ({ smoke, pair, log }) {
  const p = params(smoke)
  const n = p.marks
  const [local, atlas] = await Promise.all([connect(pair.local.uri), connect(pair.atlas.uri)])
  for (const c of [COLL, 'cafe_bills']) await prepareCollection(pair.local, local, 'bench', c)
  const ids = await seed(local.db('bench').collection(COLL), n)
  const prof = profile(p.link)
  // in its own process: the café requests below must not share an event loop with the link
  const proxy = await startLinkProcess(pair.atlas, prof)
  const reset = () => resetCollection(pair.atlas, atlas, 'bench', COLL)
  const backlog = (sync) => sync.metrics().backlog.total

  const compression = await compressionReport(pair, local.db('bench').collection(COLL))
  log(`compression: ${compression.summary}`)

  const sync = await openSync(pair, { atlasUri: `${proxy.uri(pair.atlas.uri)}/bench` })
  const mApp = new Mongoose()
  mApp.plugin(sync.plugin)
  let out
  try {
    sync.enqueue(ids.slice(0, 10).map((id) => ({ collection: COLL, id })))
    if (!(await sync.flush({ timeoutMs: 120000 }))) throw new Error('catchup: warm-up did not flush')

    // 1. catch-up alone
    sync.pause()
    await reset()
    await markAll(sync, COLL, ids)
    const b0 = await bytes(proxy)
    const t0 = performance.now()
    sync.resume()
    if (!(await sync.flush({ timeoutMs: 1800000 }))) throw new Error('catchup: the backlog did not drain within 30 min')
    const catchSec = (performance.now() - t0) / 1000
    const b1 = await bytes(proxy)
    const atlasCount = await atlas.db('bench').collection(COLL).countDocuments({})
    if (atlasCount !== n) throw new Error(`catchup: Atlas holds ${atlasCount} documents, expected ${n}`)
    const catchup = { seconds: catchSec, docsPerSec: n / catchSec, bytesUpPerDoc: (b1.up - b0.up) / n, bytesDownPerDoc: (b1.down - b0.down) / n }
    log(`catch-up of ${n}: ${round(catchSec)} s (${round(catchup.docsPerSec)} docs/s), ${round(catchup.bytesUpPerDoc)} B up/doc`)

    // 2. the app, paused vs draining, alternating windows on one backlog: first with the
    //    test bed as it is, then with "Atlas" and the link proxy at the lowest CPU priority
    //    (in the field they are not on the café PC; see bench/lib/priority.js)
    await mApp.connect(`${pair.local.uri}/bench`)
    const models = cafeModels(mApp)
    sync.pause()
    await reset()
    await markAll(sync, COLL, ids)
    await runFor(models, 1000, { clients: p.clients }) // warm-up: connections, caches, JIT
    let seq = 1e6
    const sets = {}
    for (const set of SETS) {
      if (set === 'atlasNiced') {
        const n = lowestPriority(pair.atlas, [proxy.pid])
        if (n === 0) {
          log('no /proc here: the second set of windows runs at normal priority too')
          break
        }
      }
      sets[set] = await appWindows(sync, models, p, () => (seq += 1e5), pair, log, set)
    }
    // what is left of the backlog is not drained: phase 1 timed that already
    out = { catchup, sets, leftAfterWindows: backlog(sync) }
  } finally {
    await mApp.disconnect().catch(() => {})
    await sync.close({ drainTimeoutMs: 1000 })
    await proxy.close()
    await local.close()
    await atlas.close()
  }
  return report(p, prof, compression, out)
}

/**
 * `windowPairs` × (paused, draining) café windows. Per kind of window: latencies, the CPU the
 * engine's threads and each server used, and (draining) the read gate's metrics 4×/s.
 */
async function appWindows (sync, models, p, nextSeq, pair, log, set) {
  const win = { paused: [], draining: [] }
  const cpu = { paused: emptyCpu(), draining: emptyCpu() }
  const gate = { limit: [], share: [] }
  let drainedEarly = false
  let drained = 0
  for (let w = 0; w < p.windowPairs; w++) {
    for (const kind of ['paused', 'draining']) {
      if (kind === 'paused') sync.pause()
      else sync.resume()
      const sampler = kind === 'draining' && setInterval(() => {
        const m = sync.metrics()
        gate.limit.push(m.localReadLimit)
        gate.share.push(m.drainShare)
      }, 250)
      const c0 = cpuNow(pair)
      const applied0 = sync.metrics().applied.total
      try {
        win[kind].push(await runFor(models, p.windowSec * 1000, { clients: p.clients, from: nextSeq() }))
      } finally {
        if (sampler) clearInterval(sampler)
      }
      addCpu(cpu[kind], c0, cpuNow(pair))
      if (kind === 'draining') drained += sync.metrics().applied.total - applied0
    }
    const left = sync.metrics().backlog.total
    if (left === 0) drainedEarly = true
    log(`${set}: window pair ${w + 1}/${p.windowPairs}: backlog left ${left}`)
  }
  return { win, cpu, gate, drainedEarly, drainedPerSec: drained / (p.windowPairs * p.windowSec) }
}

const emptyCpu = () => ({ engine: 0, local: 0, atlas: 0, seconds: 0 })
function cpuNow (pair) {
  return { engine: threadTicks('dualsync'), local: serverTicks(pair.local), atlas: serverTicks(pair.atlas), t: performance.now() }
}
function addCpu (acc, a, b) {
  for (const k of ['engine', 'local', 'atlas']) acc[k] += a[k] === null ? 0 : (b[k] - a[k]) / 100
  acc.seconds += (b.t - a.t) / 1000
}

function pool (list) {
  const lat = list.flatMap((x) => x.latMs)
  const requests = list.reduce((a, x) => a + x.requests, 0)
  const seconds = list.reduce((a, x) => a + x.seconds, 0)
  return { ...summarize(lat), requests, perSec: requests / seconds }
}

function summarizeSet ({ win, cpu, gate, drainedEarly, drainedPerSec }) {
  const paused = pool(win.paused)
  const draining = pool(win.draining)
  const share = (k, c) => c[k] / c.seconds // CPU cores used on average
  return {
    paused,
    draining,
    medianRatio: draining.median / paused.median,
    p99Ratio: draining.p99 / paused.p99,
    throughputRatio: paused.perSec / draining.perSec,
    drainedBeforeLastWindowEnded: drainedEarly,
    drainedPerSec,
    cpuCores: Object.fromEntries(['paused', 'draining'].map((kind) => [kind, Object.fromEntries(['engine', 'local', 'atlas'].map((k) => [k, share(k, cpu[kind])]))])),
    gate: { limit: summarize(gate.limit), share: summarize(gate.share) }
  }
}

const SET_LABEL = {
  asIs: 'test bed as it is (Atlas server and link proxy share the app\'s 2 cores)',
  atlasNiced: 'Atlas server and link proxy at the lowest CPU priority (as if elsewhere)'
}

function report (p, prof, compression, { catchup, sets, leftAfterWindows }) {
  const app = Object.fromEntries(Object.entries(sets).map(([k, v]) => [k, summarizeSet(v)]))
  // Judged on every window of both sets: 2 × windowPairs pairs.
  const all = Object.values(sets)
  const judged = summarizeSet({
    win: { paused: all.flatMap((v) => v.win.paused), draining: all.flatMap((v) => v.win.draining) },
    cpu: all[0].cpu,
    gate: { limit: all.flatMap((v) => v.gate.limit), share: all.flatMap((v) => v.gate.share) },
    drainedEarly: all.some((v) => v.drainedEarly),
    drainedPerSec: all.reduce((a, v) => a + v.drainedPerSec, 0) / all.length
  })
  const judgedLabel = all.length > 1 ? 'both sets pooled' : 'one set'
  const goals = [
    { label: `café request median latency, draining / paused (${judgedLabel})`, target: `≤ ${GOAL_APP}×`, actual: `${round(judged.medianRatio)}×`, pass: judged.medianRatio <= GOAL_APP },
    { label: `café request p99 latency, draining / paused (${judgedLabel})`, target: `≤ ${GOAL_APP}×`, actual: `${round(judged.p99Ratio)}×`, pass: judged.p99Ratio <= GOAL_APP },
    { label: `café throughput, paused / draining (${judgedLabel})`, target: `≤ ${GOAL_APP}×`, actual: `${round(judged.throughputRatio)}×`, pass: judged.throughputRatio <= GOAL_APP },
    { label: `catch-up of ${p.marks} marks over ${p.link}`, target: 'report', actual: `${round(catchup.seconds)} s, ${round(catchup.docsPerSec)} docs/s, ${round(catchup.bytesUpPerDoc)} B/doc up`, pass: null }
  ]
  const row = (label, s) => [label, s.requests, round(s.perSec), round(s.median), round(s.p90), round(s.p99), round(s.max)]
  const rows = []
  for (const [k, a] of Object.entries(app)) {
    rows.push(row(`${k}: sync paused (backlog waiting)`, a.paused), row(`${k}: backlog draining`, a.draining))
    rows.push([`${k}: draining / paused`, '', `${round(a.draining.perSec / a.paused.perSec)}×`, `${round(a.medianRatio)}×`, `${round(a.draining.p90 / a.paused.p90)}×`, `${round(a.p99Ratio)}×`, ''])
  }
  const cpuRows = []
  for (const [k, a] of Object.entries(app)) {
    for (const kind of ['paused', 'draining']) {
      const c = a.cpuCores[kind]
      cpuRows.push([k, kind, round(c.engine), round(c.local), round(c.atlas)])
    }
  }
  const gateNote = Object.entries(app).map(([k, a]) => `${k}: ${round(a.drainedPerSec)} documents applied per second, localReadLimit median ${a.gate.limit.median}, drainShare median ${round(a.gate.share.median)} (min ${round(a.gate.share.min)})`).join('; ')
  return {
    params: { ...p, linkDetail: prof },
    numbers: { catchup, compression, app, pooled: { medianRatio: judged.medianRatio, p99Ratio: judged.p99Ratio, throughputRatio: judged.throughputRatio, drainedPerSec: judged.drainedPerSec }, backlogLeftAfterWindows: leftAfterWindows },
    goals,
    table: {
      columns: ['café requests (create + 2 updateOne by _id + findById)', 'requests', 'req/s', 'median ms', 'p90 ms', 'p99 ms', 'max ms'],
      rows
    },
    extraTables: [{
      title: `Catch-up alone over ${p.link}`,
      columns: ['marks', 'time to empty s', 'docs/s', 'bytes up per doc', 'bytes down per doc', 'link bytes/s used (up)'],
      rows: [[p.marks, round(catchup.seconds), round(catchup.docsPerSec), round(catchup.bytesUpPerDoc), round(catchup.bytesDownPerDoc), `${round(catchup.bytesUpPerDoc * catchup.docsPerSec / 1e6)} MB/s of ${prof.bytesPerSec / 1e6}`]]
    }, {
      title: 'CPU during the app windows (cores used on average, from /proc: user + system)',
      columns: ['set', 'window', 'engine threads (dualsync)', 'local server', '"Atlas" server'],
      rows: cpuRows
    }, {
      title: 'Wire compression',
      columns: ['probe', 'result'],
      rows: compression.rows
    }],
    chart: {
      title: `catchup: café request latency while a backlog drains (ms, ${judgedLabel})`,
      unit: 'ms',
      groups: [
        { label: 'median', bars: [{ label: 'sync paused', value: round(judged.paused.median), baseline: true }, { label: 'backlog draining', value: round(judged.draining.median) }] },
        { label: 'p99', bars: [{ label: 'sync paused', value: round(judged.paused.p99), baseline: true }, { label: 'backlog draining', value: round(judged.draining.p99) }] }
      ]
    },
    notes: [
      `Two sets of app windows on one ${p.marks}-mark backlog, each ${p.windowPairs} × (${p.windowSec} s paused, ${p.windowSec} s draining), ${p.clients} concurrent request loops; the plugin is on in every window, so only the drain differs. ${Object.keys(app).map((k) => `${k}: ${SET_LABEL[k]}`).join('; ')}. The goal is judged on ${judgedLabel}. The second set asks whether the app's slowdown is the "Atlas" server's CPU, which a café PC does not carry: compare the two sets and the CPU table.${Object.values(app).some((a) => a.drainedBeforeLastWindowEnded) ? ' The backlog was gone before the last draining window ended: that window partly measured an idle engine.' : ''}`,
      `Backlog left after the windows: ${leftAfterWindows} marks (the app's own writes add marks in both kinds of window; while it writes the drain keeps to SYNC_DRAIN_SHARE of the time).`,
      `The drain's read gate in the draining windows (metrics sampled 4×/s): ${gateNote}.`,
      'A café request here is Mongoose calls without HTTP (Express would add the same constant to both sides and shrink the ratio).',
      'The link proxy runs in its own process (startLinkProcess), so the café requests do not share an event loop with it.',
      `Bytes per document count the whole command traffic the proxy carried (BSON documents ~385 B each, plus command framing, replies and the engine\'s other commands).`,
      'The engine runs with its default settings: this measures what the build under test does (see its commit above).'
    ]
  }
}

module.exports = {
  name: 'catchup',
  title: 'Catch-up after an outage, and the app while the backlog drains',
  goal: `the café workload's latency (median, p99) and throughput while a backlog drains ≤ ${GOAL_APP}× sync paused; catch-up time, bytes/doc and compression reported`,
  run
}
