'use strict'
// capture: what the Mongoose plugin + engine add to the app's own writes.
//
// One process, one Mongoose connection and one collection, a model per mode: "on" has the dualsync plugin
// (engine running, draining to Atlas), "off" has nothing. A third mode, "journal", is the
// plugin with the drain paused: the pure capture cost (hooks + native enqueue + journal
// write) without the drain competing for the same 2 cores and local server. A fourth,
// "hooks", is the same plugin code with a sink that drops the marks (no engine at all): the
// JS hooks' own cost, Mongoose middleware included. A fifth, "offAgain", is a second model with
// no plugin: OFF against itself, the noise floor of these ratios in this run. Rounds rotate
// the modes so drift (server caches, table growth, thermal) hits all of them alike; each
// round starts with the engine's backlog flushed (untimed) and a GC, so one mode's leftovers
// never land in another's timings. Then OFF and ON once more with "Atlas" at the lowest CPU
// priority (in the field it is not on the café PC), and the CPU each mode cost, by process.

const fs = require('node:fs')
const path = require('node:path')
const { Mongoose } = require('mongoose')
const { ObjectId } = require('mongodb')
const { connect, prepareCollection } = require('../lib/servers')
const { openSync, tempDir } = require('../lib/engine')
const { makeDoc, schemaDefinition, seed } = require('../lib/docs')
const { summarize, round, nowNs } = require('../lib/stats')
const { lowestPriority, serverTicks, threadTicks } = require('../lib/priority')

const MODES = ['off', 'on', 'journal', 'hooks', 'offAgain']
const NICED_MODES = ['off', 'on']
const CPU_PARTS = ['app', 'engine', 'local', 'atlas']
const KINDS = ['create', 'save', 'updateOne(_id)', 'updateOne(key)', 'updateMany(10)']
const ID_PATHS = ['create', 'save', 'updateOne(_id)']
const GOAL = 1.03
const GOAL_FLOOR = 1.5

/**
 * Journal bytes of the marks of one addon call (crates/core journal/record.rs + mark.rs):
 * 16-byte record header, version + kind + time (10), two length-prefixed names (4 + db +
 * collection), the id as a one-element BSON document `{_id: v}` (by lib/wire.js kind).
 */
function markBytes (encoded) {
  const idDoc = (e) => {
    switch (e.k) {
      case 0: return 22 // ObjectId
      case 9: return 5 // collection mark: empty document
      case 1: return 15 + Buffer.byteLength(String(e.v)) // string
      case 2: return 14 // int32
      case 3: case 4: case 6: return 18 // double, int64, date
      default: return 32
    }
  }
  let n = 0
  for (const e of encoded) n += 30 + Buffer.byteLength(e.d || '') + Buffer.byteLength(e.c || '') + idDoc(e)
  return n
}

function params (smoke) {
  return smoke
    ? { seedDocs: 300, rounds: 3, nicedRounds: 2, perRound: { create: 30, save: 30, 'updateOne(_id)': 30, 'updateOne(key)': 10, 'updateMany(10)': 6 } }
    : { seedDocs: 500, rounds: 30, nicedRounds: 18, perRound: { create: 34, save: 34, 'updateOne(_id)': 34, 'updateOne(key)': 10, 'updateMany(10)': 7 } }
}

async function run ({ smoke, pair, log }) {
  const p = params(smoke)
  const client = await connect(pair.local.uri)
  const db = client.db('bench')
  // Every mode writes the same collection through the same connection: the modes differ in
  // the plugin only. (With a collection and a pool each, the one that churned most, ON and
  // drain-paused share theirs, read slower for reasons that are not the plugin's.)
  const COLL = 'cap'
  await prepareCollection(pair.local, client, 'bench', COLL)
  await seed(db.collection(COLL), p.seedDocs)
  // The Atlas side gets the same index repair, or the drain would slow as the copy grows.
  const atlasClient = await connect(pair.atlas.uri)
  await prepareCollection(pair.atlas, atlasClient, 'bench', COLL)

  const sync = await openSync(pair, process.env.BENCH_ENGINE_LOG ? { logLevel: process.env.BENCH_ENGINE_LOG } : {})
  const { createPlugin } = require('../../lib/plugin')
  let dropped = 0
  const plugins = {
    on: sync.plugin,
    off: null,
    offAgain: null,
    hooks: createPlugin({ mark: (ops) => { dropped += ops.length }, isExcluded: () => false, onError: () => {} })
  }
  const mongoose = new Mongoose()
  await mongoose.connect(`${pair.local.uri}/bench`)
  const models = {}
  for (const [mode, plugin] of Object.entries(plugins)) {
    const schema = new mongoose.Schema(schemaDefinition())
    if (plugin) schema.plugin(plugin)
    models[mode] = mongoose.model(`Cap_${mode}`, schema, COLL)
  }
  models.journal = models.on

  // The addon call as the app's thread makes it, between Mongoose's own work (caches cold),
  // timed in `journal` rounds: the tight loop of the `enqueue` scenario shows its best case.
  // Next to it, the floor for a durable mark in the same place and run: one fs.writeSync of
  // the same bytes to a file on the journal's disk, before or after the call (alternating,
  // so neither always runs with the other's caches warm).
  const callUs = []
  const floorUs = []
  let perWriteUs = 0
  let writesTimed = 0
  let timingCalls = false
  const floorFd = fs.openSync(path.join(tempDir('floor'), 'marks'), 'a')
  const floorBuf = Buffer.alloc(4096, 7)
  const floor = (bytes) => {
    const t0 = nowNs()
    fs.writeSync(floorFd, floorBuf, 0, Math.min(bytes, floorBuf.length))
    floorUs.push((nowNs() - t0) / 1e3)
  }
  // Every hand-over of marks to the engine: `_captureEncoded` (ring, else by call) and the
  // direct ring writes of lib/postmarks.js (`_ringWrite`, timed only when not inside the former).
  let inHandOver = false
  const timeHandOver = (real) => (encoded) => {
    if (!timingCalls || inHandOver) return real(encoded)
    inHandOver = true
    const floorFirst = callUs.length % 2 === 0
    if (floorFirst) floor(markBytes(encoded))
    const t0 = nowNs()
    try {
      return real(encoded)
    } finally {
      const us = (nowNs() - t0) / 1e3
      inHandOver = false
      callUs.push(us)
      perWriteUs += us
      if (!floorFirst) floor(markBytes(encoded))
    }
  }
  sync._captureEncoded = timeHandOver(sync._captureEncoded.bind(sync))
  sync._ringWrite = timeHandOver(sync._ringWrite.bind(sync))
  // addon µs per Mongoose write, by kind (journal rounds): every call a write makes, summed
  const addonPerWrite = {}
  for (const k of KINDS) addonPerWrite[k] = []

  const samples = {}
  for (const mode of MODES) {
    samples[mode] = {}
    for (const k of KINDS) samples[mode][k] = []
  }
  const nicedSamples = {}
  for (const mode of NICED_MODES) {
    nicedSamples[mode] = {}
    for (const k of KINDS) nicedSamples[mode][k] = []
  }
  // The `_id`-only find the plugin adds before a non-`_id`-filter write, timed alone (driver).
  const findSamples = { 'find _id by key': [], 'find _id by group': [] }
  let seq = 1e6
  const groups = Math.floor(p.seedDocs / 10)

  async function timed (list, fn, kind) {
    perWriteUs = 0
    const t0 = nowNs()
    await fn()
    list.push((nowNs() - t0) / 1e6)
    if (timingCalls) writesTimed++
    if (timingCalls && kind) addonPerWrite[kind].push(perWriteUs)
  }

  // CPU each mode's rounds cost, by who spent it (app process, the engine's threads, each
  // server): where ON's extra time goes. Ticks are 10 ms; summed over all of a mode's rounds.
  const cpu = {}
  const cpuNow = () => {
    const u = process.cpuUsage()
    const engine = threadTicks('dualsync')
    return {
      app: (u.user + u.system) / 1000,
      engine: engine === null ? NaN : (engine + threadTicks('dualsync-ring')) * 10,
      local: (serverTicks(pair.local) ?? NaN) * 10,
      atlas: (serverTicks(pair.atlas) ?? NaN) * 10
    }
  }
  async function countedRound (set, mode) {
    const a = cpuNow()
    const n = await roundFor(mode, set === 'asIs' ? samples[mode] : nicedSamples[mode])
    const b = cpuNow()
    cpu[set] = cpu[set] || {}
    const c = cpu[set][mode] = cpu[set][mode] || { writes: 0, app: 0, engine: 0, local: 0, atlas: 0 }
    c.writes += n
    // null where /proc is absent (serverTicks, threadTicks): unknown stays unknown
    for (const k of CPU_PARTS) c[k] = c[k] === null || !Number.isFinite(b[k] - a[k]) ? null : c[k] + (b[k] - a[k])
  }

  /** One round of a mode's writes; `keep`: the sample set to record into (none: warm-up). Returns the writes timed. */
  async function roundFor (mode, keep) {
    const Model = models[mode]
    const coll = db.collection(COLL)
    const s = keep || { create: [], save: [], 'updateOne(_id)': [], 'updateOne(key)': [], 'updateMany(10)': [] }
    const created = []
    timingCalls = Boolean(keep) && mode === 'journal'
    for (let i = 0; i < p.perRound.create; i++) {
      const { _id, ...fields } = makeDoc(seq++)
      await timed(s.create, async () => { created.push((await Model.create(fields))._id) }, 'create')
    }
    // save of an existing document: loaded untimed, modified, saved timed
    for (let i = 0; i < p.perRound.save; i++) {
      const doc = await Model.findById(created[i % created.length])
      doc.amount = Math.random() * 1000
      doc.tags.push('saved')
      await timed(s.save, () => doc.save(), 'save')
    }
    for (let i = 0; i < p.perRound['updateOne(_id)']; i++) {
      const id = created[i % created.length]
      await timed(s['updateOne(_id)'], () => Model.updateOne({ _id: id }, { $inc: { count: 1 } }), 'updateOne(_id)')
    }
    for (let i = 0; i < p.perRound['updateOne(key)']; i++) {
      const key = `k${Math.floor(Math.random() * p.seedDocs)}`
      await timed(s['updateOne(key)'], () => Model.updateOne({ key }, { $set: { amount: Math.random() } }))
    }
    for (let i = 0; i < p.perRound['updateMany(10)']; i++) {
      const group = Math.floor(Math.random() * groups)
      await timed(s['updateMany(10)'], () => Model.updateMany({ group }, { $inc: { count: 1 } }))
    }
    // Keep the table size constant across rounds (driver writes: not captured, not timed).
    // Mongoose 9 carries its own bson major: hand the driver its own ObjectId type.
    timingCalls = false
    for (const id of created) await coll.deleteOne({ _id: new ObjectId(id.toHexString()) })
    return Object.values(p.perRound).reduce((a, b) => a + b, 0)
  }

  async function prepareMode (mode) {
    sync.resume()
    const drained = await sync.flush({ timeoutMs: 120000 })
    if (!drained) throw new Error('capture: the engine did not drain between rounds within 120 s')
    if (mode !== 'on') sync.pause()
    if (global.gc) global.gc()
  }

  log(`warm-up (${MODES.join(', ')})`)
  for (const mode of MODES) {
    await prepareMode(mode)
    await roundFor(mode, false)
  }
  for (let r = 0; r < p.rounds; r++) {
    // rotate the order: off,on,journal,hooks / on,journal,hooks,off / ...
    const order = MODES.map((_, i) => MODES[(i + r) % MODES.length])
    for (const mode of order) {
      await prepareMode(mode)
      await countedRound('asIs', mode)
    }
    log(`round ${r + 1}/${p.rounds} done`)
  }
  // The extra finds timed alone, after the rounds: inside OFF's rounds they made OFF a different
  // workload from OFF again (the noise-floor column).
  const plain = db.collection(COLL)
  for (let r = 0; r < p.rounds; r++) {
    for (let i = 0; i < p.perRound['updateOne(key)']; i++) {
      const key = `k${Math.floor(Math.random() * p.seedDocs)}`
      await timed(findSamples['find _id by key'], () => plain.find({ key }, { projection: { _id: 1 } }).toArray())
    }
    for (let i = 0; i < p.perRound['updateMany(10)']; i++) {
      const group = Math.floor(Math.random() * groups)
      await timed(findSamples['find _id by group'], () => plain.find({ group }, { projection: { _id: 1 } }).toArray())
    }
  }
  // Then OFF and ON again with "Atlas" at the lowest CPU priority: in the field it is not on
  // the café PC, and its upserts here take the cores the app's writes need (last: the servers
  // are this scenario's own, stopped after it).
  const nicedProcesses = lowestPriority(pair.atlas)
  if (nicedProcesses === 0) log('no /proc here: no rounds with Atlas at the lowest priority')
  for (let r = 0; nicedProcesses > 0 && r < p.nicedRounds; r++) {
    for (const mode of r % 2 ? [...NICED_MODES].reverse() : NICED_MODES) {
      await prepareMode(mode)
      await countedRound('atlasNiced', mode)
    }
    log(`round ${r + 1}/${p.nicedRounds} with Atlas at the lowest priority done`)
  }
  sync.resume()
  const drained = await sync.flush({ timeoutMs: 120000 })
  const m = sync.metrics()
  const ringMarks = sync._ring ? sync._ring.written : 0

  const stats = {}
  for (const mode of MODES) {
    stats[mode] = {}
    for (const k of KINDS) stats[mode][k] = summarize(samples[mode][k])
  }
  const nicedRows = nicedProcesses === 0
    ? []
    : KINDS.map((k) => {
      const off = summarize(nicedSamples.off[k])
      const on = summarize(nicedSamples.on[k])
      return { op: k, n: on.n, offMedianMs: round(off.median), onMedianMs: round(on.median), medianRatio: round(on.median / off.median), p99Ratio: round(on.p99 / off.p99) }
    })
  // CPU µs per timed write, by mode and by who spent it
  const cpuPerWrite = {}
  for (const [set, modes] of Object.entries(cpu)) {
    cpuPerWrite[set] = {}
    for (const [mode, c] of Object.entries(modes)) {
      cpuPerWrite[set][mode] = Object.fromEntries(CPU_PARTS.map((k) => [k, c[k] === null ? null : round(c[k] * 1000 / c.writes)]))
    }
  }
  const callStats = summarize(callUs)
  const floorStats = summarize(floorUs)
  fs.closeSync(floorFd)
  const perWrite = {}
  for (const k of ID_PATHS) {
    const st = summarize(addonPerWrite[k])
    // the same cost read from the write latencies: drain-paused median minus OFF median
    const latencyUs = (stats.journal[k].median - stats.off[k].median) * 1000
    perWrite[k] = { medianUs: round(st.median), p99Us: round(st.p99), n: st.n, vsFloor: round(st.median / floorStats.median), latencyDeltaUs: round(latencyUs) }
  }
  const findStats = {}
  for (const [k, v] of Object.entries(findSamples)) findStats[k] = summarize(v)

  const rows = KINDS.map((k) => {
    const off = stats.off[k]
    const on = stats.on[k]
    const j = stats.journal[k]
    const h = stats.hooks[k]
    const a = stats.offAgain[k]
    return {
      op: k,
      n: on.n,
      offMedianMs: round(off.median),
      onMedianMs: round(on.median),
      journalMedianMs: round(j.median),
      offP99Ms: round(off.p99),
      onP99Ms: round(on.p99),
      medianRatio: round(on.median / off.median),
      p99Ratio: round(on.p99 / off.p99),
      journalOnlyMedianRatio: round(j.median / off.median),
      hooksOnlyMedianRatio: round(h.median / off.median),
      hooksMedianMs: round(h.median),
      offAgainMedianRatio: round(a.median / off.median)
    }
  })
  const goals = rows.map((r) => ({
    label: `${r.op}: median ON/OFF`,
    target: `≤ ${GOAL}×`,
    actual: `${r.medianRatio}×`,
    pass: r.medianRatio <= GOAL,
    note: ID_PATHS.includes(r.op) ? undefined : 'non-_id filter: includes the extra _id find on local (see notes)'
  }))
  // native calls per timed write (a write's post mark may ride with a later call): counts
  // every call made while a write was timed, whichever write it belongs to
  const callsPerWrite = writesTimed ? callUs.length / writesTimed : 0
  if (callUs.length === 0) log('WARNING: no addon call was timed (does the plugin still hand marks over through Sync._captureEncoded or Sync._ringWrite?): the floor goals are N/A')
  for (const k of ID_PATHS) {
    if (callUs.length === 0) {
      goals.push({ label: `${k}: addon time per write / one fs.writeSync of a mark`, target: `≤ ${GOAL_FLOOR}×`, actual: 'not timed (no hand-over through Sync._captureEncoded or Sync._ringWrite)', pass: null })
      continue
    }
    goals.push({
      label: `${k}: addon time per write (in place) / one fs.writeSync of a mark (floor, ${round(floorStats.median)} µs)`,
      target: `≤ ${GOAL_FLOOR}×`,
      actual: `${perWrite[k].vsFloor}× (${perWrite[k].medianUs} µs)`,
      pass: perWrite[k].vsFloor <= GOAL_FLOOR
    })
  }

  await mongoose.disconnect()
  await sync.close({ drainTimeoutMs: 10000 })
  await client.close()
  await atlasClient.close()

  return {
    params: { ...p, modes: MODES, engine: 'defaults (batchSize 100, concurrency 4, workerInterval 100 ms, persistQueue true)' },
    numbers: {
      latencyMs: stats,
      extraFindMs: findStats,
      hooksModeMarksDropped: dropped,
      addonCallInSituUs: { median: round(callStats.median), p99: round(callStats.p99), calls: callUs.length, writes: writesTimed, callsPerWrite: round(callsPerWrite) },
      floorWriteSyncUs: { median: round(floorStats.median), p99: round(floorStats.p99), writes: floorUs.length },
      addonPerWriteUs: perWrite,
      atlasNiced: { processes: nicedProcesses, rounds: nicedProcesses ? p.nicedRounds : 0, rows: nicedRows },
      cpuUsPerWrite: cpuPerWrite,
      engine: { enqueued: m.enqueued, applied: m.applied.total, hookErrors: m.hookErrors, drainedAtEnd: drained, failedBatches: m.failures.batches, captureRing: m.captureRing, ringMarks }
    },
    goals,
    table: {
      columns: ['op', 'OFF median ms', 'ON median ms', 'ON/OFF median', 'OFF p99 ms', 'ON p99 ms', 'ON/OFF p99', 'drain paused / OFF (median)', 'hooks only, no engine / OFF (median)', 'OFF again / OFF (median): the noise floor'],
      rows: rows.map((r) => [r.op, r.offMedianMs, r.onMedianMs, `${r.medianRatio}×`, r.offP99Ms, r.onP99Ms, `${r.p99Ratio}×`, `${r.journalOnlyMedianRatio}×`, `${r.hooksOnlyMedianRatio}×`, `${r.offAgainMedianRatio}×`])
    },
    chart: {
      title: 'capture: median latency, sync ON ÷ OFF (lower is better)',
      unit: '×',
      refLine: { value: GOAL, label: `goal ${GOAL}×` },
      groups: [{ label: 'ON/OFF', bars: rows.map((r) => ({ label: r.op, value: r.medianRatio })) }]
    },
    extraTables: [{
      title: 'The addon call where the plugin makes it (drain paused) vs the floor, one fs.writeSync of the same bytes in the same place',
      columns: ['op', 'writes', 'addon µs per write (median; all its calls)', 'p99', 'floor µs (one writeSync, median)', 'addon / floor', 'write latency, drain paused − OFF (median, µs)'],
      rows: ID_PATHS.map((k) => [k, perWrite[k].n, perWrite[k].medianUs, perWrite[k].p99Us, round(floorStats.median), `${perWrite[k].vsFloor}×`, perWrite[k].latencyDeltaUs])
    }, ...(nicedRows.length === 0
      ? []
      : [{
          title: `ON / OFF again, "Atlas" at the lowest CPU priority (as if elsewhere: ${p.nicedRounds} more rounds of OFF and ON, after the rounds above)`,
          columns: ['op', 'OFF median ms', 'ON median ms', 'ON/OFF median', 'ON/OFF p99'],
          rows: nicedRows.map((r) => [r.op, r.offMedianMs, r.onMedianMs, `${r.medianRatio}×`, `${r.p99Ratio}×`])
        }]), {
      title: 'CPU per timed write, µs (each round: its timed writes plus the untimed driver deletes that keep the table size; 10 ms ticks summed over all of a mode\'s rounds)',
      columns: ['rounds', 'mode', 'node process (engine included)', 'engine threads', 'local server', '"Atlas" server'],
      rows: Object.entries(cpuPerWrite).flatMap(([set, modes]) => Object.entries(modes).map(([mode, c]) =>
        [set === 'asIs' ? 'as is' : 'Atlas niced', mode, ...CPU_PARTS.map((k) => c[k] === null ? 'n/a' : c[k])]))
    }],
    notes: [
      `Floor: one \`fs.writeSync\` of the bytes the journal writes for the call's marks (${markBytes([{ c: COLL, d: 'bench', k: 0 }])} B for one ObjectId mark here) to a file on the journal's disk, timed in the same wrapper right before or after each addon call (alternating): median ${round(floorStats.median)} µs, p99 ${round(floorStats.p99)} µs over ${floorUs.length} writes. The goal compares the addon time one Mongoose write costs (all of its calls) with one such write.`,
      `Extra _id-only find the plugin runs on local before a non-_id-filter write (durable intent), timed alone with the driver: by key median ${round(findStats['find _id by key'].median)} ms, by group median ${round(findStats['find _id by group'].median)} ms.`,
      `The addon's enqueue call as the plugin makes it (drain paused, between Mongoose's own work): median ${round(callStats.median)} µs, p99 ${round(callStats.p99)} µs over ${callUs.length} calls for ${writesTimed} timed writes (${round(callsPerWrite)} calls per write).`,
      `Capture ring (SYNC_CAPTURE_RING): ${m.captureRing ? `on, ${ringMarks} of the ${m.enqueued} marks written through it (the rest by call: each collection's first mark, the bench's own)` : 'off: every mark was a native call'}. "Addon call" above is every hand-over of marks as the plugin makes it: \`Sync._captureEncoded\` (ring write, else a call) and the post marks' direct ring writes (\`Sync._ringWrite\`).`,
      `Engine after the run: ${m.enqueued} marks enqueued, ${m.applied.total} documents applied on Atlas, ${m.hookErrors} hook errors, ${m.failures.batches} failed batches, drained: ${drained}.`
    ]
  }
}

module.exports = {
  name: 'capture',
  title: 'Capture overhead on Mongoose writes',
  goal: `sync ON / OFF median latency ≤ ${GOAL}× (create, save, updateOne by _id), non-_id filters reported separately; addon time per write ≤ ${GOAL_FLOOR}× one fs.writeSync of a mark`,
  run
}
