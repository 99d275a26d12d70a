// Atlas stopped mid-run: app writes keep succeeding and are journaled; once
// Atlas is back, flush() completes and Atlas equals local.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { useServers, uniqueDbName } from './helpers/servers.js'
import { openTestSync } from './helpers/testsync.js'

const require = createRequire(import.meta.url)
const { MongoClient, ObjectId } = require('mongodb')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { waitFor } = require('./helpers/wait.js')

let servers, client, sync, dbName

beforeAll(async () => {
  servers = await useServers()
  dbName = uniqueDbName('outage')
  client = new MongoClient(servers.local.uri)
  ;({ sync } = await openTestSync(servers, dbName, {
    dirPrefix: 'dualsync-outage-',
    connectTimeoutMs: 1000,
    backoffMinMs: 20,
    backoffMaxMs: 300,
    logLevel: 'error'
  }))
})

afterAll(async () => {
  await sync?.close({ drainTimeoutMs: 0 })
  await client?.close()
})

describe('Atlas outage', () => {
  it('keeps accepting writes while Atlas is down and converges after it returns', async () => {
    const coll = client.db(dbName).collection('bills')
    const write = async (i) => {
      const _id = new ObjectId()
      await coll.insertOne({ _id, i, total: i * 10 })
      sync.enqueue({ collection: 'bills', id: _id })
      return _id
    }
    for (let i = 0; i < 50; i++) await write(i)
    expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)

    await servers.atlas.stop()
    const during = []
    for (let i = 50; i < 300; i++) during.push(await write(i))
    await coll.updateMany({ i: { $lt: 20 } }, { $set: { paid: true } })
    const updated = await coll.find({ i: { $lt: 20 } }, { projection: { _id: 1 } }).toArray()
    sync.enqueue(updated.map((d) => ({ collection: 'bills', id: d._id })))
    await coll.deleteOne({ _id: during[0] })
    sync.enqueue({ collection: 'bills', id: during[0] })

    expect(await sync.flush({ timeoutMs: 300 })).toBe(false)
    await waitFor('Atlas to be seen as down', () => sync.metrics().atlas.connected === false)
    expect(sync.metrics().backlog.total).toBeGreaterThan(0)

    await servers.atlas.start()
    expect(await sync.flush({ timeoutMs: 60000 })).toBe(true)
    assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName))
    const m = sync.metrics()
    expect(m.atlas.connected).toBe(true)
    expect(m.failures.transient).toBeGreaterThan(0)
    expect(m.backlog.total).toBe(0)
  })
})
