// The drain over a slow link: wire compression as the server negotiates it, the local read
// limit knob and its metric, and per-document order while lanes keep several batches in flight.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'

const require = createRequire(import.meta.url)
const { MongoClient, ObjectId } = require('mongodb')
const { createSync } = require('../index.js')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { startOpcodeRelay, OP_COMPRESSED } = require('./helpers/opcodes.js')
const { startProxy } = require('./helpers/proxy.js')
const { waitFor } = require('./helpers/wait.js')

let servers, client
const open = []

beforeAll(async () => {
  servers = await useServers()
  client = new MongoClient(servers.local.uri)
})

afterAll(async () => {
  for (const s of open) await s.close({ drainTimeoutMs: 0 }).catch(() => {})
  await client?.close()
})

async function openSync (dbName, atlasUri, opts = {}) {
  const sync = await createSync({
    enabled: true,
    localUri: `${servers.local.uri}/${dbName}`,
    atlasUri: `${atlasUri}/${dbName}`,
    dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-drainlink-')),
    workerInterval: 0,
    connectTimeoutMs: 5000,
    backoffMinMs: 20,
    backoffMaxMs: 300,
    logLevel: 'error',
    ...opts
  })
  open.push(sync)
  return sync
}

async function insertMarked (sync, dbName, coll, n) {
  const docs = Array.from({ length: n }, (_, i) => ({ _id: new ObjectId(), i, note: 'lorem ipsum '.repeat(20) }))
  await client.db(dbName).collection(coll).insertMany(docs)
  sync.enqueue(docs.map((d) => ({ collection: coll, id: d._id })))
  return docs
}

/** Whether the server answers a zlib offer with compressed messages (seen on the wire). */
async function serverAcceptsZlib (uri) {
  const relay = await startOpcodeRelay({ target: { port: Number(new URL(uri).port) } })
  const probe = new MongoClient(relay.uri(uri), { compressors: ['zlib'], serverSelectionTimeoutMS: 10000 })
  try {
    await probe.connect()
    await probe.db('admin').command({ ping: 1 })
    return Boolean(relay.counts().toServer.ops[OP_COMPRESSED])
  } finally {
    await probe.close()
    await relay.close()
  }
}

describe('drain over a link', () => {
  it('compresses what it sends when the server accepts a compressor, and sends plain messages when it accepts none', async () => {
    const accepts = await serverAcceptsZlib(servers.atlas.uri)
    const relay = await startOpcodeRelay({ target: { port: Number(new URL(servers.atlas.uri).port) } })
    try {
      const dbName = uniqueDbName('compress')
      const sync = await openSync(dbName, relay.uri(servers.atlas.uri))
      await insertMarked(sync, dbName, 'bills', 300)
      expect(await sync.flush({ timeoutMs: 60000 })).toBe(true)
      assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName))
      const sent = relay.counts().toServer
      expect(sent.malformed).toBe(0)
      if (accepts) {
        // Offered zstd, snappy, zlib: the server took one of them for the drain's commands.
        expect(sent.ops[OP_COMPRESSED] || 0).toBeGreaterThan(0)
        expect(Object.keys(sent.compressors).every((c) => ['zstd', 'snappy', 'zlib'].includes(c))).toBe(true)
      } else {
        // The test beds answer the offer with no compressor: nothing compressed, nothing broken.
        expect(sent.ops[OP_COMPRESSED] || 0).toBe(0)
        expect(sent.ops[2013]).toBeGreaterThan(0)
      }
    } finally {
      await relay.close()
    }
  })

  it('shows the local read limit in metrics: fixed without adaptation, within 1..limit with it', async () => {
    const fixedDb = uniqueDbName('readlimit')
    const fixed = await openSync(fixedDb, servers.atlas.uri, { localReadLimit: 3, localReadAdaptive: false })
    expect(fixed.metrics().localReadLimit).toBe(3)
    await insertMarked(fixed, fixedDb, 'bills', 400)
    expect(await fixed.flush({ timeoutMs: 60000 })).toBe(true)
    expect(fixed.metrics().localReadLimit).toBe(3)
    assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, fixedDb))

    const adaptiveDb = uniqueDbName('readlimit')
    const adaptive = await openSync(adaptiveDb, servers.atlas.uri, { localReadLimit: 1 })
    await insertMarked(adaptive, adaptiveDb, 'bills', 400)
    // One read at a time is the floor: the drain still finishes.
    expect(await adaptive.flush({ timeoutMs: 60000 })).toBe(true)
    expect(adaptive.metrics().localReadLimit).toBe(1)
    assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, adaptiveDb))
  })

  it('holds a backlog drain to its share while the app writes, keeps pace with the app, and drains the rest once the app is quiet', async () => {
    const dbName = uniqueDbName('share')
    const sync = await openSync(dbName, servers.atlas.uri, { batchSize: 20 })
    expect(sync.metrics().drainShare).toBe(1)
    sync.pause()
    const backlog = await insertMarked(sync, dbName, 'bills', 3000)
    sync.resume()
    // The app writes (new documents, each marked as the plugin would) until a read of the
    // backlog has kept to the share: observed on the metric, not assumed from a sleep.
    const written = []
    let shared = false
    for (let i = 0; i < 20000 && !shared; i++) {
      written.push(...await insertMarked(sync, dbName, 'orders', 1))
      shared = sync.metrics().drainShare === 0.03
    }
    expect(shared).toBe(true)
    // Quiet app: no flush() (which would skip the share anyway); the drain goes back to full
    // speed by itself and everything, backlog and the app's writes, reaches Atlas.
    await waitFor('the backlog to drain after the app went quiet', () => sync.metrics().backlog.total === 0, { timeoutMs: 120000 })
    const atlas = new MongoClient(servers.atlas.uri)
    try {
      expect(await atlas.db(dbName).collection('bills').countDocuments()).toBe(backlog.length)
      expect(await atlas.db(dbName).collection('orders').countDocuments()).toBe(written.length)
    } finally {
      await atlas.close()
    }
    expect(sync.metrics().drainShare).toBe(1)
    assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName))
  })

  it('keeps each document in order with several batches per lane in flight over a 20 ms link', async () => {
    const proxy = await startProxy({ target: { port: Number(new URL(servers.atlas.uri).port) } })
    proxy.setLatency(10)
    try {
      const dbName = uniqueDbName('pipeline')
      // One lane, small batches: consecutive batches of the lane overlap on the link.
      const sync = await openSync(dbName, proxy.uri(servers.atlas.uri), { concurrency: 1, batchSize: 5 })
      const coll = client.db(dbName).collection('tabs')
      const hot = Array.from({ length: 5 }, () => new ObjectId())
      await coll.insertMany(hot.map((_id) => ({ _id, v: 0 })))
      for (let v = 1; v <= 40; v++) {
        for (const _id of hot) {
          await coll.updateOne({ _id }, { $set: { v } })
          sync.enqueue({ collection: 'tabs', id: _id })
        }
        await insertMarked(sync, dbName, 'tabs', 3)
      }
      expect(await sync.flush({ timeoutMs: 120000 })).toBe(true)
      assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName))
      const atlas = new MongoClient(servers.atlas.uri)
      try {
        const vs = await atlas.db(dbName).collection('tabs').find({ _id: { $in: hot } }).toArray()
        expect(vs.map((d) => d.v)).toEqual(hot.map(() => 40))
      } finally {
        await atlas.close()
      }
    } finally {
      await proxy.close()
    }
  })
})
