// Collection scans, lane routing and failure attribution, on two real servers:
// - a burst of collection marks (an updateMany above the cap from many
//   requests) runs one scan and at most one more, not one per mark, and still
//   repairs every difference;
// - a pre-write collection mark is an intent: alone it waits for its post mark;
// - Int32 7, Int64 7 and Double 7.0 are one document: their marks coalesce in
//   one lane, so Atlas ends with local's state whatever the mix of types;
// - local unreachable is not "Atlas disconnected"; a refused document is not a successful batch.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest'
import { createRequire } from 'node:module'
import { useServers, uniqueDbName } from './helpers/servers.js'
import { syncFactory, drainState } from './helpers/jobsync.js'

const require = createRequire(import.meta.url)
const { MongoClient, Int32, Long, Double } = require('mongodb')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { waitFor } = require('./helpers/wait.js')
const { startServer } = require('../scripts/testbed.js')

let servers, local, atlas, syncs

beforeAll(async () => {
  servers = await useServers()
  ;[local, atlas] = [servers.local, servers.atlas].map((server) => new MongoClient(server.uri))
  syncs = syncFactory(servers)
})
afterEach(() => syncs.closeAll())
afterAll(() => Promise.all([local?.close(), atlas?.close()]))

describe('collection scans', () => {
  it('coalesce per collection: 50 collection marks start at most two scans, and every difference is repaired', async () => {
    const db = uniqueDbName('scans')
    const docs = Array.from({ length: 200 }, (_, i) => ({ _id: `d${i}`, n: i }))
    await local.db(db).collection('menu').insertMany(docs)
    await atlas.db(db).collection('menu').insertMany(docs.slice(0, 150).map((d) => ({ ...d, n: -1 })))
    await atlas.db(db).collection('menu').insertOne({ _id: 'only-on-atlas' })
    const sync = await syncs.open(db)
    sync.enqueue(Array.from({ length: 50 }, () => ({ collection: 'menu', kind: 'collection' })))
    expect(await sync.flush({ timeoutMs: 120_000 }), drainState(sync)).toBe(true)
    const scans = sync.metrics().collectionScans
    expect(scans.started).toBeGreaterThanOrEqual(1)
    expect(scans.started).toBeLessThanOrEqual(2)
    expect(scans.started + scans.coalesced).toBe(50)
    expect(scans).toMatchObject({ running: 0, waiting: 0 })
    assertConverged(await compareDatabases(local, atlas, db))
  })

  it('a pre-write collection mark waits for its post mark, then they make one scan', async () => {
    const db = uniqueDbName('scanintent')
    await local.db(db).collection('stock').insertMany([{ _id: 1, q: 1 }, { _id: 2, q: 2 }])
    const sync = await syncs.open(db)
    sync.enqueue({ collection: 'stock', kind: 'collection', intent: true })
    // The intent alone holds: no scan starts while its write has not happened.
    sync.enqueue({ collection: 'other', id: 'x' }) // something the dispatcher must get past
    await waitFor('the unrelated mark to be applied', () => sync.metrics().applied.total >= 1, { timeoutMs: 60_000 })
    expect(sync.metrics().collectionScans).toMatchObject({ started: 0, waiting: 1 })
    // "The write" happens, then its post mark.
    await local.db(db).collection('stock').updateMany({}, { $inc: { q: 10 } })
    sync.enqueue({ collection: 'stock', kind: 'collection' })
    expect(await sync.flush({ timeoutMs: 120_000 }), drainState(sync)).toBe(true)
    expect(sync.metrics().collectionScans).toMatchObject({ started: 1, coalesced: 1, waiting: 0 })
    assertConverged(await compareDatabases(local, atlas, db))
  })
})

describe('lanes route numeric _ids by value', () => {
  it('Int32, Int64 and Double marks of one number converge to local whatever the mix', async () => {
    const db = uniqueDbName('numlanes')
    const coll = local.db(db).collection('tables')
    const ids = Array.from({ length: 40 }, (_, i) => i + 1)
    await coll.insertMany(ids.map((i) => ({ _id: new Int32(i), seats: 0 })))
    const sync = await syncs.open(db, { concurrency: 8 })
    const forms = [(i) => new Int32(i), (i) => Long.fromNumber(i), (i) => new Double(i)]
    for (let round = 1; round <= 6; round++) {
      await coll.updateMany({}, { $set: { seats: round } })
      // Each round names every document in all three types, interleaved.
      sync.enqueue(ids.flatMap((i) => forms.map((_, k) => ({ collection: 'tables', id: forms[(k + round) % 3](i) }))))
    }
    expect(await sync.flush({ timeoutMs: 120_000 }), drainState(sync)).toBe(true)
    assertConverged(await compareDatabases(local, atlas, db))
    expect(sync.metrics().deadLettered).toBe(0)
  })
})

describe('failure attribution', () => {
  it('a batch in which Atlas refused a document is not counted as a success', async () => {
    const db = uniqueDbName('refused')
    // A unique index on "Atlas" only: the local document is a duplicate-key refusal there.
    await atlas.db(db).collection('guests').createIndex({ email: 1 }, { unique: true })
    await atlas.db(db).collection('guests').insertOne({ _id: 'g0', email: 'a@x' })
    await local.db(db).collection('guests').insertOne({ _id: 'g1', email: 'a@x' })
    const sync = await syncs.open(db, { maxRetries: 1, backoffMinMs: 10, backoffMaxMs: 50 })
    sync.enqueue({ collection: 'guests', id: 'g1' })
    expect(await sync.flush({ timeoutMs: 60_000 }), drainState(sync)).toBe(true)
    const m = sync.metrics()
    expect(m.deadLettered).toBe(1)
    expect(m.failures.batches).toBeGreaterThanOrEqual(2) // the first attempt and the retry
    expect(m.successRate).toBeLessThan(1)
    expect(m.atlas.connected).toBe(true) // a refused document is not an outage
  })

  it('local unreachable does not mark Atlas disconnected; it is reported as a local error', async () => {
    const localServer = await startServer({ name: 'scans-local-down' })
    const db = uniqueDbName('localdown')
    const mine = new MongoClient(localServer.uri)
    try {
      await mine.db(db).collection('orders').insertOne({ _id: 'o1', total: 5 })
      const { openTestSync } = await import('./helpers/testsync.js')
      const { sync } = await openTestSync({ local: localServer, atlas: servers.atlas }, db, {
        backoffMinMs: 10, backoffMaxMs: 100, connectTimeoutMs: 500
      })
      try {
        sync.enqueue({ collection: 'orders', id: 'o1' })
        expect(await sync.flush({ timeoutMs: 60_000 })).toBe(true)
        expect(sync.metrics().atlas.connected).toBe(true)
        await localServer.stop()
        sync.enqueue({ collection: 'orders', id: 'o1' })
        await waitFor('a failure to read local', () => sync.metrics().local.lastError, { timeoutMs: 60_000 })
        const m = sync.metrics()
        expect(m.failures.transient).toBeGreaterThan(0)
        expect(m.atlas.connected).toBe(true)
        expect(m.atlas.lastError).toBe(null)
        expect(m.local.lastError).toMatch(/local/)
        await localServer.start()
        expect(await sync.flush({ timeoutMs: 120_000 }), drainState(sync)).toBe(true)
        expect(sync.metrics().local.lastError).toBe(null)
      } finally {
        await sync.close({ drainTimeoutMs: 0 })
      }
    } finally {
      await mine.close()
      await localServer.destroy()
    }
  })
})
