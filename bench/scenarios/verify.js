'use strict'
// verify: throughput of `sync.verify()` on an identical collection (local == Atlas) against
// the plainest possible full read: both sides streamed with the driver in `_id` order, in
// parallel, as raw BSON (no decoding, no comparison). The engine also hashes and compares.

const { connect, prepareCollection } = require('../lib/servers')
const { openSync } = require('../lib/engine')
const { makeDoc } = require('../lib/docs')
const { round } = require('../lib/stats')

const COLL = 'verify_docs'

async function readAll (coll) {
  let n = 0
  let bytes = 0
  for await (const raw of coll.find({}, { sort: { _id: 1 }, raw: true, batchSize: 1000 })) {
    n++
    bytes += raw.length
  }
  return { n, bytes }
}

async function run ({ smoke, pair, log }) {
  const n = smoke ? 10000 : 100000
  const local = await connect(pair.local.uri)
  const atlas = await connect(pair.atlas.uri)
  for (const [server, client] of [[pair.local, local], [pair.atlas, atlas]]) {
    await prepareCollection(server, client, 'bench', COLL)
  }
  const lc = local.db('bench').collection(COLL)
  const ac = atlas.db('bench').collection(COLL)
  for (let i = 0; i < n; i += 1000) {
    const docs = Array.from({ length: Math.min(1000, n - i) }, (_, j) => makeDoc(i + j))
    await Promise.all([lc.insertMany(docs, { ordered: false }), ac.insertMany(docs, { ordered: false })])
  }
  log(`${n} identical documents on both sides`)

  // baseline: raw streaming read of both sides in parallel
  const tb = performance.now()
  const [rl, ra] = await Promise.all([readAll(lc), readAll(ac)])
  const baseSec = (performance.now() - tb) / 1000
  if (rl.n !== n || ra.n !== n) throw new Error(`verify baseline read ${rl.n}/${ra.n}, expected ${n}`)
  const baseRate = n / baseSec
  log(`baseline raw read: ${round(baseRate)} docs/s (per side)`)

  const sync = await openSync(pair)
  let engine = null
  if (typeof sync.verify !== 'function') {
    log('sync.verify() is not in this build: engine side skipped')
  } else {
    const te = performance.now()
    const job = sync.verify({ collections: [COLL] })
    const snap = await (job && job.done ? job.done : job)
    const sec = (performance.now() - te) / 1000
    engine = { seconds: sec, docsPerSec: n / sec, snapshot: snap }
    log(`engine verify: ${round(engine.docsPerSec)} docs/s`)
  }
  await sync.close({ drainTimeoutMs: 1000 })
  await local.close()
  await atlas.close()

  const ratio = engine ? engine.docsPerSec / baseRate : null
  return {
    params: { docs: n, docBytes: Math.round(rl.bytes / n), baseline: 'driver find().sort({_id:1}) raw:true, batchSize 1000, both sides in parallel' },
    numbers: { baseline: { seconds: baseSec, docsPerSec: baseRate, localBytes: rl.bytes, atlasBytes: ra.bytes }, engine },
    goals: [{ label: 'verify / raw parallel read', target: 'report', actual: engine ? `${round(ratio)}×` : 'verify() not available', pass: null }],
    table: {
      columns: ['pipeline', 'seconds', 'docs/s (pairs compared)', 'vs raw read'],
      rows: [
        ['raw driver read of both sides (baseline)', round(baseSec), round(baseRate), '1×'],
        ['sync.verify()', engine ? round(engine.seconds) : 'n/a', engine ? round(engine.docsPerSec) : 'n/a', engine ? `${round(ratio)}×` : 'n/a']
      ]
    },
    chart: {
      title: `verify: ${n} identical docs, docs/s (higher is better)`,
      unit: 'docs/s',
      groups: [{ label: 'docs/s', bars: [{ label: 'raw read both sides', value: round(baseRate), baseline: true }, ...(engine ? [{ label: 'sync.verify()', value: round(engine.docsPerSec) }] : [])] }]
    },
    notes: engine
      ? [`verify job: state ${engine.snapshot && engine.snapshot.state}, ${engine.snapshot && engine.snapshot.docsScanned} documents scanned, ${engine.snapshot && engine.snapshot.differences} differences (expected: done, ${n}, 0). It reads both sides in \`_id\` order like the baseline, and also hashes and compares every pair; FerretDB sorts each \`find\` in memory, which both pay alike.`]
      : ['sync.verify() was not present in the build this run used; only the baseline was measured.']
  }
}

module.exports = {
  name: 'verify',
  title: 'verify() throughput on an identical collection',
  goal: 'report docs/s against a raw parallel streaming read of both sides',
  run
}
