// The capture ring (lib/ring.js writes, crates/core/src/ring reads): marks written into shared
// memory instead of a native call per write. Every _id kind must come out as it went in (checked
// end to end: the documents reach Atlas), a process killed with marks still in the ring must get
// them back at the next open, a call too large for the ring goes by call, and with the ring off
// every mark is a call.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import fc from 'fast-check'
import { useServers, uniqueDbName } from './helpers/servers.js'
import { openTestSync } from './helpers/testsync.js'

const require = createRequire(import.meta.url)
const { MongoClient, ObjectId, Long } = require('mongodb')
const { createSync } = require('../index.js')
const { encodeOp } = require('../lib/wire.js')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { startFixture, lineMatching } = require('./helpers/fixture.js')
const { waitFor } = require('./helpers/wait.js')

const OFFLINE = 'mongodb://127.0.0.1:9/ring'
const KILLER = path.join(__dirname, 'fixtures', 'ringkill.js')

function tempDir () {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-ring-'))
}

/** Marks as the plugin sends them (lib/plugin → Sync._captureEncoded): through the ring. */
function capture (sync, ops) {
  return sync._captureEncoded(ops.map((op) => encodeOp(op, sync.config.localDb)))
}

/** An engine with no servers to reach: marks stay in its journal. */
function openOffline (dataDir, options = {}) {
  return createSync({ enabled: true, localUri: OFFLINE, atlasUri: OFFLINE, dataDir, connectTimeoutMs: 100, logLevel: 'error', ...options })
}

describe('capture ring, with servers', () => {
  let servers, client, sync, dbName
  beforeAll(async () => {
    servers = await useServers()
    dbName = uniqueDbName('ring')
    client = new MongoClient(servers.local.uri)
    sync = (await openTestSync(servers, dbName, { dirPrefix: 'dualsync-ring-' })).sync
  })
  afterAll(async () => {
    await sync?.close({ drainTimeoutMs: 0 })
    await client?.close()
  })

  // The _id kinds the wire form has, with the awkward values of each.
  const anyId = fc.oneof(
    fc.constant(null).map(() => new ObjectId()),
    fc.string({ unit: 'grapheme', maxLength: 40 }),
    fc.integer({ min: -2147483648, max: 2147483647 }),
    fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Number.isInteger(d)),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((b) => Long.fromBigInt(b)),
    fc.date({ min: new Date(-8.64e14), max: new Date(8.64e14), noInvalidDate: true }),
    fc.record({ a: fc.integer(), b: fc.string({ maxLength: 5 }) })
  )

  it('every _id kind written through the ring reaches Atlas as the document local holds', async () => {
    const coll = client.db(dbName).collection('kinds')
    let run = 0
    await fc.assert(fc.asyncProperty(fc.uniqueArray(anyId, { minLength: 1, maxLength: 12, selector: (id) => JSON.stringify(id) + typeof id }), fc.integer({ min: 1, max: 4 }), async (ids, group) => {
      run++
      await coll.deleteMany({})
      const docs = ids.map((_id, n) => ({ _id, n, run }))
      await coll.insertMany(docs)
      const before = sync._ring.written
      // Some calls of one mark, some of several: one JS call's marks are published together.
      for (let i = 0; i < ids.length; i += group) {
        capture(sync, ids.slice(i, i + group).map((id) => ({ collection: 'kinds', id })))
      }
      // The namespace was learnt by the first run's first call: from then on all went by ring.
      if (run > 1) expect(sync._ring.written - before).toBe(ids.length)
      sync.enqueue({ collection: 'kinds', kind: 'collection' }) // removes the last run's leftovers from Atlas
      expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)
      assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName, ['kinds']))
    }), { numRuns: 12 })
    expect(sync.metrics().captureRing).toBe(true)
    // Each record read as written (a bad checksum would be skipped and repaired by the
    // collection marks above, unseen by the comparison)
    expect(sync.metrics().journal.corruptRecords).toBe(0)
  })
})

describe('capture ring, offline', () => {
  it('gets back the marks a process killed with SIGKILL left in the ring', async () => {
    // The engine reads the ring every few ms, so a kill can land just after a read: try until
    // one leaves marks behind (each attempt checks that nothing was lost either way).
    let replayed = false
    for (let attempt = 0; attempt < 5 && !replayed; attempt++) {
      const dataDir = tempDir()
      const child = startFixture(KILLER, { DATA_DIR: dataDir, MARKS: '3000' })
      const [, pending, written] = (await lineMatching(child, /^pending (-?\d+) written (-?\d+)/)).map(Number)
      const { signal } = await child.exited
      expect(signal).toBe('SIGKILL')
      expect(written).toBe(2999) // the first mark of a namespace goes by call
      const sync = await openOffline(dataDir)
      try {
        const m = sync.metrics()
        expect(m.journal.recovered).toBe(3000)
        expect(m.journal.corruptRecords).toBe(0)
      } finally {
        await sync.close({ drainTimeoutMs: 0 })
      }
      replayed = pending > 0
    }
    expect(replayed).toBe(true)
  })

  it('a ring left by a killed process is replayed, then retired, by a start with the ring off', async () => {
    const dataDir = tempDir()
    const child = startFixture(KILLER, { DATA_DIR: dataDir, MARKS: '2000' })
    await lineMatching(child, /^pending /)
    expect((await child.exited).signal).toBe('SIGKILL')
    expect(fs.existsSync(path.join(dataDir, 'capture-ring'))).toBe(true)
    for (let start = 0; start < 2; start++) {
      const sync = await openOffline(dataDir, { captureRing: false })
      try {
        expect(sync.metrics().captureRing).toBe(false)
        expect(sync.metrics().journal.recovered).toBe(2000) // no mark lost, none twice
        expect(fs.existsSync(path.join(dataDir, 'capture-ring'))).toBe(false)
      } finally {
        await sync.close({ drainTimeoutMs: 0 })
      }
    }
  })

  it('an unreadable record is skipped, counted, and the collections marked since start are reconciled', async () => {
    const dataDir = tempDir()
    const sync = await openOffline(dataDir)
    try {
      capture(sync, [{ collection: 'a', id: 1 }]) // by call: learns the namespace
      capture(sync, [{ collection: 'b', id: 1 }])
      const enqueued = (m, c) => m.collections[`ring.${c}`].enqueued
      const before = sync.metrics()
      // One record whose bytes change after its checksum was taken, before it is published.
      const ring = sync._ring
      const record = ring._record.bind(ring)
      ring._record = (pos, ...rest) => {
        record(pos, ...rest)
        ring._bytes[pos + 20] ^= 0xff
      }
      expect(capture(sync, [{ collection: 'a', id: 2 }])).toBe(1)
      ring._record = record
      // Live, the engine waits a little for a record that does not read before it skips it.
      await waitFor('the record to be skipped', () => sync.metrics().journal.corruptRecords === 1)
      const after = sync.metrics()
      // Each known collection got a collection mark; the skipped mark itself is not counted.
      expect(enqueued(after, 'a')).toBe(enqueued(before, 'a') + 1)
      expect(enqueued(after, 'b')).toBe(enqueued(before, 'b') + 1)
      // And the ring goes on.
      capture(sync, [{ collection: 'a', id: 3 }])
      expect(enqueued(sync.metrics(), 'a')).toBe(enqueued(before, 'a') + 2)
    } finally {
      await sync.close({ drainTimeoutMs: 0 })
    }
  })

  it('a call too large for the ring goes by call, and nothing is lost', async () => {
    const dataDir = tempDir()
    const sync = await openOffline(dataDir)
    try {
      capture(sync, [{ collection: 'big', id: 'first' }]) // learns the namespace
      const ops = Array.from({ length: 20000 }, (_, i) => ({ collection: 'big', id: `id-${i}`.padEnd(40, '.') }))
      const before = sync._ring.written
      expect(capture(sync, ops)).toBe(20000) // 64-byte records: 1.28 MB, more than the 1 MiB ring
      expect(sync._ring.written).toBe(before)
      capture(sync, [{ collection: 'big', id: 'after' }])
      expect(sync._ring.written).toBe(before + 1)
      expect(sync.metrics().collections['ring.big'].enqueued).toBe(20002)
    } finally {
      await sync.close({ drainTimeoutMs: 0 })
    }
  })

  it('with SYNC_CAPTURE_RING=false, or an fsync per append, every mark is a call', async () => {
    for (const options of [{ captureRing: false }, { fsyncIntervalMs: 0 }]) {
      const sync = await openOffline(tempDir(), options)
      try {
        expect(sync._ring).toBe(null)
        for (let i = 0; i < 10; i++) capture(sync, [{ collection: 'calls', id: i }])
        const m = sync.metrics()
        expect(m.captureRing).toBe(false)
        expect(m.collections['ring.calls'].enqueued).toBe(10)
      } finally {
        await sync.close({ drainTimeoutMs: 0 })
      }
    }
    const prev = process.env.SYNC_CAPTURE_RING
    process.env.SYNC_CAPTURE_RING = 'false'
    try {
      const sync = await openOffline(tempDir())
      expect(sync.metrics().captureRing).toBe(false)
      await sync.close({ drainTimeoutMs: 0 })
    } finally {
      if (prev === undefined) delete process.env.SYNC_CAPTURE_RING
      else process.env.SYNC_CAPTURE_RING = prev
    }
  })

  it('marks written while close() drains go by call and are kept for the next start', async () => {
    const dataDir = tempDir()
    const sync = await openOffline(dataDir)
    capture(sync, [{ collection: 'late', id: 0 }])
    capture(sync, [{ collection: 'late', id: 1 }])
    expect(sync._ring.written).toBe(1)
    const closing = sync.close({ drainTimeoutMs: 0 })
    expect(sync._ring).toBe(null)
    capture(sync, [{ collection: 'late', id: 2 }])
    await closing
    const again = await openOffline(dataDir)
    try {
      expect(again.metrics().journal.recovered).toBe(3)
    } finally {
      await again.close({ drainTimeoutMs: 0 })
    }
  })
})
