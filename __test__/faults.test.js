// Network faults between the addon and Atlas, through a TCP proxy on
// loopback: connections black-holed mid-batch, connections reset, 500 ms of
// added latency. Each must converge with no loss once the fault clears.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { useServers, uniqueDbName } from './helpers/servers.js'
import { openTestSync } from './helpers/testsync.js'

const require = createRequire(import.meta.url)
const { MongoClient, ObjectId } = require('mongodb')
const { startProxy } = require('./helpers/proxy.js')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { waitFor } = require('./helpers/wait.js')

let servers, proxy, client, sync, dbName

beforeAll(async () => {
  servers = await useServers()
  proxy = await startProxy({ target: { host: '127.0.0.1', port: servers.atlas.port } })
  dbName = uniqueDbName('faults')
  client = new MongoClient(servers.local.uri)
  ;({ sync } = await openTestSync(servers, dbName, {
    dirPrefix: 'dualsync-faults-',
    atlasUri: proxy.uri(`${servers.atlas.uri}/${dbName}`),
    batchSize: 20,
    connectTimeoutMs: 1500,
    backoffMinMs: 20,
    backoffMaxMs: 300,
    logLevel: 'error'
  }))
})

afterAll(async () => {
  await sync?.close({ drainTimeoutMs: 0 })
  await client?.close()
  await proxy?.close()
})

async function writeSome (coll, n, tag) {
  const ids = []
  for (let i = 0; i < n; i++) {
    const _id = new ObjectId()
    await coll.insertOne({ _id, tag, i, body: 'x'.repeat(200) })
    ids.push(_id)
  }
  await coll.updateMany({ tag }, { $inc: { i: 1000 } })
  sync.enqueue(ids.map((id) => ({ collection: coll.collectionName, id })))
  return ids
}

describe('network faults', () => {
  it('black-holed connections mid-batch: converges after the hole closes', async () => {
    const coll = client.db(dbName).collection('blackhole')
    await writeSome(coll, 30, 'warmup')
    expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)
    proxy.setMode('blackhole')
    await writeSome(coll, 200, 'during')
    await waitFor('a failed batch while black-holed', () => sync.metrics().failures.transient > 0, { timeoutMs: 60000 })
    expect(await sync.flush({ timeoutMs: 200 })).toBe(false)
    proxy.setMode('pass')
    expect(await sync.flush({ timeoutMs: 90000 })).toBe(true)
    assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName, ['blackhole']))
  })

  it('reset connections: converges with no loss', async () => {
    const coll = client.db(dbName).collection('reset')
    const before = sync.metrics().failures.transient
    proxy.setMode('reset')
    await writeSome(coll, 200, 'during')
    await waitFor('a failed batch while resetting', () => sync.metrics().failures.transient > before, { timeoutMs: 60000 })
    proxy.setMode('pass')
    expect(await sync.flush({ timeoutMs: 90000 })).toBe(true)
    assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName, ['reset']))
  })

  it('500 ms of added latency: slower, still exact', async () => {
    const coll = client.db(dbName).collection('slow')
    proxy.setLatency(500)
    await writeSome(coll, 100, 'slow')
    expect(await sync.flush({ timeoutMs: 120000 })).toBe(true)
    proxy.setLatency(0)
    assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName, ['slow']))
    expect(sync.metrics().applyLatencyMs.max).toBeGreaterThanOrEqual(500)
  })
})
