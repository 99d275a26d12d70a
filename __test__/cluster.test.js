// Cluster mode converges: four processes with the same env and NODE_APP_INSTANCE 0..3 (PM2
// cluster), updating the same documents at the same time through Atlas ~20-60 ms away (a
// loopback proxy with jitter). After every process flushed, Atlas equals local byte for byte,
// every round, with no full sync. Without the post-acknowledgement check
// (DUALSYNC_CLUSTER_VERIFY=false sets SYNC_VERIFY_AFTER_ACK=false in the instances) this fails:
// the process that read an older state can be applied last.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'

const require = createRequire(import.meta.url)
const { MongoClient } = require('mongodb')
const { compareDatabases } = require('./helpers/compare.js')
const { startProxy } = require('./helpers/proxy.js')
const { startInstance } = require('./helpers/instances.js')

const INSTANCES = 4
const ROUNDS = Number(process.env.DUALSYNC_CLUSTER_ROUNDS || 10)
const DOCS = 30
const WRITES = 40
let servers, proxy

beforeAll(async () => {
  servers = await useServers()
  const port = Number(new URL(servers.atlas.uri).port)
  proxy = await startProxy({ target: { port } })
  proxy.setLatency(20, 40)
})

afterAll(async () => {
  if (proxy) await proxy.close()
})

describe('PM2 cluster: several processes writing the same documents', () => {
  it(`${INSTANCES} instances converge byte for byte after every one of ${ROUNDS} rounds`, async () => {
    const db = uniqueDbName('cluster')
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-cluster-'))
    const env = {
      LOCAL_URI: `${servers.local.uri}/${db}`,
      ATLAS_URI: proxy.uri(`${servers.atlas.uri}/${db}`),
      DATA_DIR: root,
      OPTS: JSON.stringify({ workerInterval: 0, batchSize: 20, logLevel: 'warn' })
    }
    if (process.env.DUALSYNC_CLUSTER_VERIFY) env.SYNC_VERIFY_AFTER_ACK = process.env.DUALSYNC_CLUSTER_VERIFY
    const apps = Array.from({ length: INSTANCES }, (_, i) => startInstance({ env, instance: i }))
    const local = new MongoClient(servers.local.uri)
    const atlas = new MongoClient(servers.atlas.uri)
    try {
      await Promise.all(apps.map((a) => a.ready))
      await Promise.all([local.connect(), atlas.connect()])
      const ids = Array.from({ length: DOCS }, (_, i) => i + 1)
      const stale = []
      for (let round = 1; round <= ROUNDS; round++) {
        await Promise.all(apps.map((a, i) => a.request({ cmd: 'round', round, ids, writes: WRITES, seed: round * 7919 + i * 104729 })))
        const flushed = await Promise.all(apps.map((a) => a.request({ cmd: 'flush' })))
        expect(flushed.map((f) => f.drained)).toEqual(apps.map(() => true))
        const [r] = await compareDatabases(local, atlas, db, ['bills'])
        stale.push({ round, missing: r.missing.length, extra: r.extra.length, different: r.different.length })
      }
      const statuses = await Promise.all(apps.map((a) => a.request({ cmd: 'status' })))
      const resends = statuses.reduce((n, s) => n + s.metrics.verifyResends, 0)
      // Every round, not only the last: a stale document must never survive a full flush.
      expect(stale, `rounds with documents that differ (re-sent after acknowledgement: ${resends})`)
        .toEqual(stale.map(({ round }) => ({ round, missing: 0, extra: 0, different: 0 })))
    } finally {
      await Promise.all(apps.map(async (a) => {
        a.child.kill('SIGKILL')
        await a.exited
      }))
      await Promise.all([local.close(), atlas.close()])
      fs.rmSync(root, { recursive: true, force: true })
    }
  }, 600_000)
})
