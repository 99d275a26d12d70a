'use strict'
// enqueue: cost of one `sync.enqueue({collection, id})` on the app's thread, journal on,
// drain paused (so nothing competes), against what the old JS middleware did per write.
//
// Ids are made before each timed chunk, so only the call is timed. The three variants run
// chunk by chunk in rotating order, so drift (page cache, GC, CPU clock) hits them alike.

const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const { ObjectId } = require('mongodb')
const { openSync, tempDir, removeDir } = require('../lib/engine')
const { summarize, round, nowNs } = require('../lib/stats')

const GOAL_US = 2
const CHUNK = 10000
const OLD_QUEUE_MAX = 10000 // SYNC_QUEUE_MAX_SIZE default of the old middleware
const OLD_REWRITE_MS = 100 // its worker interval: the queue file was rewritten about this often

/** The old middleware's queued operation (no document body: the same work as a mark). */
function oldOp (collection, id) {
  return { id: crypto.randomUUID(), operation: 'update', collection, documentId: id, timestamp: Date.now(), retries: 0 }
}

async function run ({ smoke, pair, log }) {
  const total = smoke ? 100000 : 1000000
  const chunks = total / CHUNK
  const dir = tempDir('enqueue')
  const sync = await openSync(pair, { dataDir: path.join(dir, 'journal'), persistQueue: true })
  sync.pause()

  // old middleware, model 1: one append of the op's JSON line per write
  const appendFile = path.join(dir, 'old-append.jsonl')
  let appendQueue = []
  const appendOne = (op) => {
    appendQueue.push(op)
    if (appendQueue.length >= OLD_QUEUE_MAX) appendQueue = [] // the drain's job; keeps heaps equal
    fs.appendFileSync(appendFile, `${JSON.stringify(op)}\n`)
  }
  // old middleware, model 2: array in memory, whole queue rewritten as JSON periodically
  const rewriteFile = path.join(dir, 'old-rewrite.json')
  let rewriteQueue = []
  let lastRewrite = Date.now()
  let rewrites = 0
  const rewriteOne = (op) => {
    rewriteQueue.push(op)
    if (rewriteQueue.length > OLD_QUEUE_MAX) rewriteQueue.shift() // bounded like the old queue
    const now = Date.now()
    if (now - lastRewrite >= OLD_REWRITE_MS) {
      fs.writeFileSync(rewriteFile, JSON.stringify(rewriteQueue))
      lastRewrite = now
      rewrites++
    }
  }

  const variants = {
    native: (ids) => { for (let i = 0; i < ids.length; i++) sync.enqueue({ collection: 'enq', id: ids[i] }) },
    'old: append JSON line': (ids) => { for (let i = 0; i < ids.length; i++) appendOne(oldOp('enq', ids[i])) },
    'old: periodic rewrite': (ids) => { for (let i = 0; i < ids.length; i++) rewriteOne(oldOp('enq', ids[i])) }
  }
  const names = Object.keys(variants)
  const chunkNs = Object.fromEntries(names.map((n) => [n, []]))

  // warm-up: JIT, file creation, engine's first segment
  for (const n of names) variants[n](Array.from({ length: 2000 }, () => new ObjectId()))
  if (global.gc) global.gc()

  for (let c = 0; c < chunks; c++) {
    const ids = Array.from({ length: CHUNK }, () => new ObjectId())
    for (let k = 0; k < names.length; k++) {
      const n = names[(c + k) % names.length]
      const t0 = nowNs()
      variants[n](ids)
      chunkNs[n].push(nowNs() - t0)
    }
    if ((c + 1) % Math.max(1, Math.floor(chunks / 5)) === 0) log(`${(c + 1) * CHUNK} calls per variant`)
  }

  // Per-call distribution of the native call (hrtime around each call; timer cost reported).
  const sampleN = smoke ? 20000 : 100000
  const ids = Array.from({ length: sampleN }, () => new ObjectId())
  const perCall = new Float64Array(sampleN)
  const timer = new Float64Array(sampleN)
  for (let i = 0; i < sampleN; i++) {
    const a = nowNs()
    const b = nowNs()
    timer[i] = b - a
  }
  for (let i = 0; i < sampleN; i++) {
    const t0 = nowNs()
    sync.enqueue({ collection: 'enq', id: ids[i] })
    perCall[i] = nowNs() - t0
  }
  // Batched form: one call with 100 ops (what the plugin does for updateMany's ids).
  const batchIds = Array.from({ length: sampleN }, () => new ObjectId())
  const tb = nowNs()
  for (let i = 0; i < sampleN; i += 100) {
    sync.enqueue(batchIds.slice(i, i + 100).map((id) => ({ collection: 'enq', id })))
  }
  const batchPerOpNs = (nowNs() - tb) / sampleN
  // Where the native call's time goes: JS validation/encoding alone.
  const { encodeOp } = require('../../lib/wire')
  const te = nowNs()
  for (let i = 0; i < sampleN; i++) encodeOp({ collection: 'enq', id: ids[i] }, 'bench')
  const encodeNs = (nowNs() - te) / sampleN

  const m = sync.metrics()
  const journalBytes = m.journal && m.journal.bytes
  const enqueued = m.enqueued
  await sync.close({ drainTimeoutMs: 0 })
  const appendBytes = fs.statSync(appendFile).size
  const rewriteBytes = fs.existsSync(rewriteFile) ? fs.statSync(rewriteFile).size : 0
  removeDir(dir)

  const perOpUs = {}
  const chunkStats = {}
  for (const n of names) {
    const sum = chunkNs[n].reduce((a, b) => a + b, 0)
    perOpUs[n] = sum / (chunks * CHUNK) / 1000
    chunkStats[n] = summarize(chunkNs[n].map((v) => v / CHUNK / 1000))
  }
  const call = summarize(Array.from(perCall, (v) => v / 1000))
  const timerStats = summarize(Array.from(timer, (v) => v / 1000))
  const nat = perOpUs.native

  return {
    params: { calls: total, chunk: CHUNK, persistQueue: true, engine: 'paused', queueMaxSize: 10000, oldQueueMax: OLD_QUEUE_MAX, oldRewriteMs: OLD_REWRITE_MS },
    numbers: {
      perOpUs,
      perChunkUs: chunkStats,
      nativePerCallUs: call,
      timerOverheadUs: timerStats,
      batch100PerOpUs: batchPerOpNs / 1000,
      jsEncodeOpUs: encodeNs / 1000,
      journal: { bytes: journalBytes, enqueued, bytesPerMark: journalBytes && enqueued ? journalBytes / enqueued : null },
      oldFiles: { appendBytes, appendBytesPerOp: appendBytes / (total + 2000), rewriteBytes, rewrites }
    },
    goals: [{ label: 'native enqueue, mean per call', target: `≤ ${GOAL_US} µs`, actual: `${round(nat)} µs`, pass: nat <= GOAL_US }],
    table: {
      columns: ['variant', 'mean µs/call', 'median of chunk means µs', 'worst chunk µs/call', 'vs native'],
      rows: names.map((n) => [n, round(perOpUs[n]), round(chunkStats[n].median), round(chunkStats[n].max), `${round(perOpUs[n] / nat)}×`])
    },
    extraTables: [{
      title: 'Native call, timed one by one',
      columns: ['n', 'median µs', 'p99 µs', 'max µs', 'timer overhead median µs', 'batch of 100: µs per op', 'JS encodeOp alone µs'],
      rows: [[call.n, round(call.median), round(call.p99), round(call.max), round(timerStats.median), round(batchPerOpNs / 1000), round(encodeNs / 1000)]]
    }],
    chart: {
      title: 'enqueue: µs per call (lower is better)',
      unit: 'µs',
      refLine: { value: GOAL_US, label: `goal ${GOAL_US} µs` },
      groups: [{ label: 'per call', bars: names.map((n) => ({ label: n, value: round(perOpUs[n]), baseline: n !== 'native' })) }]
    },
    notes: [
      `Journal: ${journalBytes} bytes for ${enqueued} marks (${journalBytes && enqueued ? round(journalBytes / enqueued) : '?'} B/mark); old append file ${round(appendBytes / (total + 2000))} B/op.`,
      `The periodic-rewrite model rewrote the file ${rewrites} times (queue capped at ${OLD_QUEUE_MAX}); it is cheap per call only because it is not durable: up to ${OLD_REWRITE_MS} ms of writes are lost on a crash, and everything past ${OLD_QUEUE_MAX} pending is dropped.`
    ]
  }
}

module.exports = {
  name: 'enqueue',
  title: 'Native enqueue cost (journal on)',
  goal: `≤ ${GOAL_US} µs per sync.enqueue() call`,
  run
}
