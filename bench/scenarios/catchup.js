'use strict'
// catchup: a day offline (issue 13, items 2 and 3). A backlog of marks drains to Atlas
// through the `rtt60-2mbps` link profile (bench/lib/link.js):
//   1. catch-up alone: time to empty, bytes on the link per document (proxy counters), and
//      what wire compression each side negotiates (the servers' hello answers; the bytes say
//      whether the engine's traffic is compressed);
//   2. the café workload (bench/lib/cafe.js) while the same backlog drains vs with sync
//      paused, in alternating windows of the same run: request latency (median, p99) and
//      throughput. Both windows have the plugin on; only the drain differs.

const { Mongoose } = require('mongoose')
const { connect, prepareCollection, resetCollection } = require('../lib/servers')
const { openSync, markAll } = require('../lib/engine')
const { seed } = require('../lib/docs')
const { round, summarize } = require('../lib/stats')
const { profile, startLinkProcess, bytes } = require('../lib/link')
const { cafeModels, runFor } = require('../lib/cafe')
const { compressionReport } = require('../lib/compression')

const COLL = 'catchup_docs'
const LINK = 'rtt60-2mbps'
const GOAL_APP = 1.1

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
    markAll(sync, COLL, ids)
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

    // 2. the app, paused vs draining, alternating windows on one backlog
    await mApp.connect(`${pair.local.uri}/bench`)
    const models = cafeModels(mApp)
    sync.pause()
    await reset()
    markAll(sync, COLL, ids)
    await runFor(models, 1000, { clients: p.clients }) // warm-up: connections, caches, JIT
    const win = { paused: [], draining: [] }
    let seq = 1e6
    let drainedEarly = false
    for (let w = 0; w < p.windowPairs; w++) {
      sync.pause()
      win.paused.push(await runFor(models, p.windowSec * 1000, { clients: p.clients, from: (seq += 1e5) }))
      sync.resume()
      win.draining.push(await runFor(models, p.windowSec * 1000, { clients: p.clients, from: (seq += 1e5) }))
      const left = backlog(sync)
      if (left === 0) drainedEarly = true
      log(`window pair ${w + 1}/${p.windowPairs}: backlog left ${left}`)
    }
    // what is left of the backlog is not drained: phase 1 timed that already
    out = { catchup, win, drainedEarly, leftAfterWindows: backlog(sync) }
  } finally {
    await mApp.disconnect().catch(() => {})
    await sync.close({ drainTimeoutMs: 1000 })
    await proxy.close()
    await local.close()
    await atlas.close()
  }
  return report(p, prof, compression, out)
}

function pool (list) {
  const lat = list.flatMap((x) => x.latMs)
  const requests = list.reduce((a, x) => a + x.requests, 0)
  const seconds = list.reduce((a, x) => a + x.seconds, 0)
  return { ...summarize(lat), requests, perSec: requests / seconds }
}

function report (p, prof, compression, { catchup, win, drainedEarly, leftAfterWindows }) {
  const paused = pool(win.paused)
  const draining = pool(win.draining)
  const med = draining.median / paused.median
  const p99 = draining.p99 / paused.p99
  const thr = paused.perSec / draining.perSec
  const goals = [
    { label: 'café request median latency, draining / paused', target: `≤ ${GOAL_APP}×`, actual: `${round(med)}×`, pass: med <= GOAL_APP },
    { label: 'café request p99 latency, draining / paused', target: `≤ ${GOAL_APP}×`, actual: `${round(p99)}×`, pass: p99 <= GOAL_APP },
    { label: 'café throughput, paused / draining', target: `≤ ${GOAL_APP}×`, actual: `${round(thr)}×`, pass: thr <= GOAL_APP },
    { label: `catch-up of ${p.marks} marks over ${p.link}`, target: 'report', actual: `${round(catchup.seconds)} s, ${round(catchup.docsPerSec)} docs/s, ${round(catchup.bytesUpPerDoc)} B/doc up`, pass: null }
  ]
  const row = (label, s) => [label, s.requests, round(s.perSec), round(s.median), round(s.p90), round(s.p99), round(s.max)]
  return {
    params: { ...p, linkDetail: prof },
    numbers: { catchup, compression, app: { paused, draining, medianRatio: med, p99Ratio: p99, throughputRatio: thr, drainedBeforeLastWindowEnded: drainedEarly, backlogLeftAfterWindows: leftAfterWindows } },
    goals,
    table: {
      columns: ['café requests (create + 2 updateOne by _id + findById)', 'requests', 'req/s', 'median ms', 'p90 ms', 'p99 ms', 'max ms'],
      rows: [row('sync paused (backlog waiting)', paused), row('backlog draining', draining), ['draining / paused', '', `${round(draining.perSec / paused.perSec)}×`, `${round(med)}×`, `${round(draining.p90 / paused.p90)}×`, `${round(p99)}×`, '']]
    },
    extraTables: [{
      title: `Catch-up alone over ${p.link}`,
      columns: ['marks', 'time to empty s', 'docs/s', 'bytes up per doc', 'bytes down per doc', 'link bytes/s used (up)'],
      rows: [[p.marks, round(catchup.seconds), round(catchup.docsPerSec), round(catchup.bytesUpPerDoc), round(catchup.bytesDownPerDoc), `${round(catchup.bytesUpPerDoc * catchup.docsPerSec / 1e6)} MB/s of ${prof.bytesPerSec / 1e6}`]]
    }, {
      title: 'Wire compression',
      columns: ['probe', 'result'],
      rows: compression.rows
    }],
    chart: {
      title: 'catchup: café request latency while a backlog drains (ms)',
      unit: 'ms',
      groups: [
        { label: 'median', bars: [{ label: 'sync paused', value: round(paused.median), baseline: true }, { label: 'backlog draining', value: round(draining.median) }] },
        { label: 'p99', bars: [{ label: 'sync paused', value: round(paused.p99), baseline: true }, { label: 'backlog draining', value: round(draining.p99) }] }
      ]
    },
    notes: [
      `The app windows alternate: ${p.windowPairs} × (${p.windowSec} s paused, ${p.windowSec} s draining) on one ${p.marks}-mark backlog, ${p.clients} concurrent request loops; the plugin is on in both, so only the drain differs.${drainedEarly ? ' The backlog was gone before the last draining window ended: that window partly measured an idle engine.' : ''}`,
      `Backlog left after the windows: ${leftAfterWindows} marks (the app's own writes add marks in both kinds of window).`,
      'A café request here is Mongoose calls without HTTP (Express would add the same constant to both sides and shrink the ratio).',
      'The link proxy runs in its own process (startLinkProcess), so the café requests do not share an event loop with it (before 2026-12-02 it ran in this process); the "Atlas" server still shares the 2 cores with the app, which a café PC does not.',
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
