// The native engine end to end, without Mongoose: raw driver writes marked
// through sync.enqueue() must reach "Atlas" exactly, across id types and
// deletes; bad input is refused with a TypeError that says what is wrong.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { useServers, uniqueDbName } from './helpers/servers.js'
import { openTestSync } from './helpers/testsync.js'

const require = createRequire(import.meta.url)
const { MongoClient, ObjectId, Long } = require('mongodb')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')

let servers, client, sync, dbName

beforeAll(async () => {
  servers = await useServers()
  dbName = uniqueDbName('engine')
  client = new MongoClient(`${servers.local.uri}`)
  sync = (await openTestSync(servers, dbName, { dirPrefix: 'dualsync-engine-' })).sync
})

afterAll(async () => {
  await sync?.close({ drainTimeoutMs: 0 })
  await client?.close()
})

describe('engine', () => {
  it('syncs inserts, updates and deletes of every _id type', async () => {
    const coll = client.db(dbName).collection('things')
    const ids = [new ObjectId(), 'str-id', 42, 2.5, Long.fromString('9007199254740993'), new Date(1700000000000), { a: 1, b: 'x' }]
    for (const [i, _id] of ids.entries()) {
      await coll.insertOne({ _id, n: i, nested: { list: [1, 2, 3], when: new Date() } })
      sync.enqueue({ collection: 'things', id: _id })
    }
    expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)
    assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName, ['things']))

    await coll.updateMany({}, { $inc: { n: 100 }, $unset: { nested: '' } })
    await coll.deleteOne({ _id: 'str-id' })
    sync.enqueue(ids.map((id) => ({ collection: 'things', id })))
    expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)
    const result = await compareDatabases(servers.local.uri, servers.atlas.uri, dbName, ['things'])
    assertConverged(result)
    expect(result[0].atlasCount).toBe(ids.length - 1)
  })

  // The plugin's pre-write marks are intents: sending one before its write lands would be
  // wasted, and a crash after the write must still replay it. Both call shapes must carry it.
  it.each([
    ['one op', (op) => sync.enqueue(op)],
    ['an array', (op) => sync.enqueue([op])]
  ])('holds a pre-write (intent) mark passed as %s until the post-write mark comes', async (_shape, enqueue) => {
    const coll = client.db(dbName).collection('intents')
    const atlas = new MongoClient(servers.atlas.uri)
    try {
      const _id = new ObjectId()
      await coll.insertOne({ _id, n: 1 })
      expect(enqueue({ collection: 'intents', id: _id, intent: true })).toBe(1)
      // Held for its 30 s intent delay: a short flush cannot complete.
      expect(await sync.flush({ timeoutMs: 500 })).toBe(false)
      expect(await atlas.db(dbName).collection('intents').countDocuments({ _id })).toBe(0)
      expect(enqueue({ collection: 'intents', id: _id })).toBe(1)
      expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)
      expect(await atlas.db(dbName).collection('intents').findOne({ _id })).toEqual({ _id, n: 1 })
    } finally {
      await atlas.close()
    }
  })

  // A write's pre marks may outnumber the in-flight cap (an updateMany naming many documents):
  // held intents must not fill the cap and leave their own post marks stuck in the queue until
  // the intent delay (30 s) runs out.
  it('does not let held intents fill the in-flight cap and stall their post-write marks', async () => {
    const { sync: small } = await openTestSync(servers, dbName, {
      dirPrefix: 'dualsync-intentcap-',
      queueMaxSize: 100, // in-flight cap: min(batchSize × lanes × (LANE_DEPTH + 2), half of this) = 50 < 60 intents
      batchSize: 10,
      concurrency: 1
    })
    try {
      const coll = client.db(dbName).collection('intent_cap')
      const docs = Array.from({ length: 60 }, (_, i) => ({ _id: new ObjectId(), n: i }))
      await coll.insertMany(docs)
      small.enqueue(docs.map((d) => ({ collection: 'intent_cap', id: d._id, intent: true })))
      small.enqueue(docs.map((d) => ({ collection: 'intent_cap', id: d._id })))
      expect(await small.flush({ timeoutMs: 15000 })).toBe(true)
      assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName, ['intent_cap']))
    } finally {
      await small.close({ drainTimeoutMs: 0 })
    }
  })

  it('coalesces repeated marks of a hot document into fewer writes', async () => {
    const coll = client.db(dbName).collection('hot')
    const _id = new ObjectId()
    await coll.insertOne({ _id, n: 0 })
    const before = sync.metrics()
    sync.pause()
    for (let i = 1; i <= 50; i++) {
      await coll.updateOne({ _id }, { $set: { n: i } })
      sync.enqueue({ collection: 'hot', id: _id })
    }
    sync.resume()
    expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)
    const after = sync.metrics()
    expect(after.enqueued - before.enqueued).toBe(50)
    expect(after.coalesced - before.coalesced).toBeGreaterThan(0)
    expect(after.applied.total - before.applied.total).toBeLessThan(50)
    assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName, ['hot']))
  })

  it('refuses bad ops with a TypeError and keeps the good ones', async () => {
    expect(() => sync.enqueue({ id: 1 })).toThrow(/collection is required/)
    expect(() => sync.enqueue({ collection: 'x' })).toThrow(/op\.id is required/)
    expect(() => sync.enqueue({ collection: 'x', id: () => 1 })).toThrow(TypeError)
    expect(() => sync.enqueue({ collection: 'x', id: Symbol('s') })).toThrow(/cannot be a MongoDB _id/)
    expect(() => sync.enqueue({ collection: '$bad', id: 1 })).toThrow(/not a valid MongoDB collection name/)
    const coll = client.db(dbName).collection('mixed')
    await coll.insertOne({ _id: 'good', v: 1 })
    expect(() => sync.enqueue([{ collection: 'mixed', id: 'good' }, { id: 'no-collection' }])).toThrow(/\[1\].*collection is required/)
    expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)
    assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName, ['mixed']))
  })

  it('reports metrics that move with the work', async () => {
    const m = sync.metrics()
    expect(m.enabled).toBe(true)
    expect(m.state).toBe('running')
    expect(m.applied.total).toBeGreaterThan(0)
    expect(m.atlas.connected).toBe(true)
    expect(m.backlog.total).toBe(0)
    expect(m.collections[`${dbName}.things`].upserts).toBeGreaterThan(0)
  })
})
