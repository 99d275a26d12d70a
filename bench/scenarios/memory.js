'use strict'
// memory: a large backlog while Atlas is down. RSS before/after and at peak, memory per
// pending mark vs its size on disk; then recovery of that backlog by a new engine on the same
// data dir, and (optionally in smoke) the time to drain it once Atlas is back.
//
// The marks name documents that do not exist in local (random ObjectIds): the engine sends
// them as deletes, so the drain figure is for delete-of-absent statements, not upserts.

const crypto = require('node:crypto')
const { ObjectId } = require('mongodb')
const { openSync, tempDir, removeDir, waitFor } = require('../lib/engine')
const { round } = require('../lib/stats')

const MiB = 2 ** 20

function rss () {
  if (global.gc) { global.gc(); global.gc() }
  return process.memoryUsage().rss
}

async function run ({ smoke, pair, log }) {
  const n = smoke ? 100000 : 1000000
  const drainWindowSec = smoke ? 10 : 60
  const dir = tempDir('memory')
  await pair.atlas.stop()
  log('Atlas stopped')

  const rssStart = rss()
  // 'error': the engine warns on every retry against the stopped Atlas
  const sync = await openSync(pair, { dataDir: dir, persistQueue: true, logLevel: 'error' })
  sync.enqueue({ collection: 'mem', id: new ObjectId() }) // first segment + first engine allocations
  const rssBefore = rss()
  let peak = rssBefore
  // RSS (after GC) at a few backlog sizes: if the backlog spills to disk, RSS stops growing
  // once the in-memory queue is full, whatever the backlog.
  const checkpoints = [10000, n / 10, n / 2, n].filter((c, i, a) => c >= 10000 && a.indexOf(c) === i)
  const curve = []
  const t0 = performance.now()
  let marked = 1
  let enqueueMs = 0
  for (const target of checkpoints) {
    const ts = performance.now()
    while (marked < target) {
      const k = Math.min(1000, target - marked)
      sync.enqueue(Array.from({ length: k }, () => ({ collection: 'mem', id: new ObjectId() })))
      marked += k
      if (marked % 50000 < 1000) peak = Math.max(peak, process.memoryUsage().rss)
    }
    enqueueMs += performance.now() - ts
    // let the worker take what it will (it retries against the stopped Atlas)
    await new Promise((resolve) => setTimeout(resolve, 500))
    const m = sync.metrics()
    curve.push({ marks: marked, rss: rss(), journalBytes: m.journal.bytes, backlog: m.backlog })
  }
  const enqueueSec = enqueueMs / 1000
  const wallSec = (performance.now() - t0) / 1000
  const m1 = sync.metrics()
  const rssAfter = curve[curve.length - 1].rss
  peak = Math.max(peak, rssAfter)
  const maxRssOs = process.resourceUsage().maxRSS * 1024
  const journalBytes = m1.journal.bytes
  log(`backlog ${m1.backlog.total} (memory ${m1.backlog.memory}, disk ${m1.backlog.disk}, in flight ${m1.backlog.inFlight}); RSS ${round(rssBefore / MiB)} → ${round(rssAfter / MiB)} MiB; journal ${round(journalBytes / MiB)} MiB`)
  const half = curve.find((c) => c.marks === n / 2) || curve[0]
  const lastHalfRamPerMark = (rssAfter - half.rss) / Math.max(1, n - half.marks)
  const lastHalfDiskPerMark = (journalBytes - half.journalBytes) / Math.max(1, n - half.marks)

  const tc = performance.now()
  const drainedAtClose = await sync.close({ drainTimeoutMs: 0 })
  const closeSec = (performance.now() - tc) / 1000

  // The closed engine's data-dir lock goes with its native object (released when it is
  // collected, not by close()): collect it before reopening the same dir in this process.
  if (global.gc) { global.gc(); global.gc() }
  // Recovery: createSync resolves after the journal is read back.
  const tr = performance.now()
  const again = await openSync(pair, { dataDir: dir, persistQueue: true, logLevel: 'error' })
  const recoverSec = (performance.now() - tr) / 1000
  const m2 = again.metrics()
  const recovered = m2.journal.recovered
  const rssRecovered = rss()
  log(`recovered ${recovered} marks in ${round(recoverSec)} s (backlog ${m2.backlog.total})`)

  // Drain once Atlas is back: timed to the end, or rate over a bounded window.
  await pair.atlas.start()
  const td = performance.now()
  const appliedBefore = again.metrics().applied.total
  const done = await waitFor(() => again.metrics().backlog.total === 0, { timeoutMs: drainWindowSec * 1000, everyMs: 200 })
  const drainSec = (performance.now() - td) / 1000
  const applied = again.metrics().applied.total - appliedBefore
  const drainRate = applied / drainSec
  log(done ? `drained ${applied} in ${round(drainSec)} s` : `drained ${applied} in ${drainWindowSec} s window (${round(drainRate)}/s)`)
  await again.close({ drainTimeoutMs: 0 })
  removeDir(dir)

  // Reference: the old middleware's in-memory queue of op objects for the same backlog.
  const heap0 = (global.gc && global.gc(), process.memoryUsage().heapUsed)
  const oldQueue = []
  for (let i = 0; i < n; i++) {
    oldQueue.push({ id: crypto.randomUUID(), operation: 'update', collection: 'mem', documentId: new ObjectId().toHexString(), timestamp: Date.now(), retries: 0 })
  }
  const heap1 = (global.gc && global.gc(), process.memoryUsage().heapUsed)
  const oldBytesPerOp = (heap1 - heap0) / oldQueue.length

  const perMarkMem = (rssAfter - rssBefore) / n
  const perMarkDisk = journalBytes / n
  const MB = (b) => `${round(b / MiB)} MiB`
  return {
    params: { marks: n, queueMaxSize: 10000, persistQueue: true, atlas: 'stopped during enqueue and recovery', drainWindowSec },
    numbers: {
      rss: { start: rssStart, before: rssBefore, after: rssAfter, peakSampled: peak, maxRssOs, afterRecovery: rssRecovered },
      backlog: m1.backlog,
      journal: m1.journal,
      perMarkBytes: { memory: perMarkMem, disk: perMarkDisk, oldJsQueueHeap: oldBytesPerOp },
      enqueueSec,
      wallSec,
      curve,
      lastHalf: { from: half.marks, to: n, ramPerMark: lastHalfRamPerMark, diskPerMark: lastHalfDiskPerMark },
      closeSec,
      drainedAtClose,
      recovery: { seconds: recoverSec, recovered, expected: n, backlog: m2.backlog },
      drainAfterRecovery: { finished: Boolean(done), seconds: drainSec, applied, docsPerSec: drainRate, estimatedTotalSec: done ? drainSec : n / drainRate }
    },
    goals: [
      { label: `RSS growth per mark, backlog ${half.marks} → ${n}`, target: '≈ 0 (spilled to disk)', actual: `${round(lastHalfRamPerMark)} B RAM vs ${round(lastHalfDiskPerMark)} B disk`, pass: lastHalfRamPerMark < 0.1 * lastHalfDiskPerMark },
      { label: `recovery of ${n} marks finds them all`, target: `${n}`, actual: `${recovered}`, pass: recovered === n }
    ],
    table: {
      columns: ['measure', 'value'],
      rows: [
        ['RSS before backlog', MB(rssBefore)],
        ...curve.map((c) => [`RSS with ${c.marks} pending (after GC); journal`, `${MB(c.rss)}; ${MB(c.journalBytes)}`]),
        ['peak RSS (OS maxRSS)', `${round(maxRssOs / MiB)} MiB`],
        ['backlog memory / disk / in flight', `${m1.backlog.memory} / ${m1.backlog.disk} / ${m1.backlog.inFlight}`],
        ['RSS growth / marks, whole backlog (includes the fixed in-memory queue)', `${round(perMarkMem)} B`],
        [`RSS growth / marks, from ${half.marks} to ${n} pending`, `${round(lastHalfRamPerMark)} B`],
        ['disk per pending mark (journal bytes / marks)', `${round(perMarkDisk)} B`],
        ['old JS queue: heap per pending op (reference)', `${round(oldBytesPerOp)} B`],
        [`enqueue of ${n} marks (arrays of 1000)`, `${round(enqueueSec)} s (${round(n / enqueueSec)} marks/s)`],
        ['recovery: new engine on the same dir until createSync resolves', `${round(recoverSec)} s (${recovered} recovered)`],
        ['drain after Atlas is back', done ? `${round(drainSec)} s (${round(drainRate)} marks/s)` : `not finished in ${drainWindowSec} s: ${round(drainRate)} marks/s, ~${round(n / drainRate)} s estimated`]
      ]
    },
    chart: {
      title: `memory: ${n} pending marks, bytes per mark`,
      unit: 'B',
      groups: [{ label: 'per mark', bars: [{ label: 'old JS queue (heap)', value: round(oldBytesPerOp), baseline: true }, { label: `engine RAM (${half.marks}→${n})`, value: round(Math.max(0, lastHalfRamPerMark)) }, { label: 'engine disk', value: round(perMarkDisk) }] }]
    },
    notes: [
      'The drain-after-recovery figure is for marks of documents that do not exist in local, which the engine turns into deletes on Atlas.'
    ]
  }
}

module.exports = {
  name: 'memory',
  title: 'Backlog memory and recovery (Atlas down)',
  goal: 'memory bounded by queueMaxSize whatever the backlog; recovery finds every mark',
  run
}
