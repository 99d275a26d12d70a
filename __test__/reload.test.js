// Reload and scale changes, with real processes (PM2's shapes, without PM2; pm2.test.js runs
// PM2 itself):
// - reload: a new worker starts on the same instance dir while the old one is still draining a
//   backlog (Atlas slowed by the proxy); the new one's createSync waits for the lock (and says
//   so), takes over when the old one exits, and nothing is lost.
// - scale down: an instance dir with a backlog and a dead letter whose process was kill -9'd is
//   drained by a remaining instance on its own (no CLI run); the dead letter moves over.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'

const require = createRequire(import.meta.url)
const { MongoClient } = require('mongodb')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { startProxy } = require('./helpers/proxy.js')
const { startInstance } = require('./helpers/instances.js')
const { waitFor } = require('./helpers/wait.js')

let servers, proxy

beforeAll(async () => {
  servers = await useServers()
  proxy = await startProxy({ target: { port: Number(new URL(servers.atlas.uri).port) } })
})

afterAll(async () => {
  if (proxy) await proxy.close()
})

function setup (tag, opts) {
  const db = uniqueDbName(tag)
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `dualsync-${tag}-`))
  const env = {
    LOCAL_URI: `${servers.local.uri}/${db}`,
    ATLAS_URI: proxy.uri(`${servers.atlas.uri}/${db}`),
    DATA_DIR: root,
    OPTS: JSON.stringify({ workerInterval: 0, batchSize: 20, logLevel: 'info', ...opts })
  }
  return { db, root, env }
}

async function stopAll (apps) {
  await Promise.all(apps.map(async (a) => {
    a.child.kill('SIGKILL')
    await a.exited
  }))
}

describe('pm2 reload: same instance dir, new worker before the old one exits', () => {
  it('waits for the draining holder, logs it, takes over and loses nothing', async () => {
    proxy.setLatency(1000, 200)
    const { db, root, env } = setup('reload')
    const old = startInstance({ env: { ...env, DRAIN_MS: '300' }, instance: 0 })
    let next
    const local = new MongoClient(servers.local.uri)
    const atlas = new MongoClient(servers.atlas.uri)
    try {
      await old.ready
      await old.request({ cmd: 'insert', from: 1, count: 300 })
      next = startInstance({ env, instance: 0 })
      await waitFor('the new worker to say it waits for the lock', () => /log warn data dir .*instance-0 is held by pid \d+/.test(next.output()), { timeoutMs: 60000 })
      const { backlog } = (await old.request({ cmd: 'status' })).metrics
      expect(backlog.total, 'the old worker still has a backlog when the new one starts').toBeGreaterThan(0)
      old.child.kill('SIGINT')
      expect((await old.exited).code).toBe(0)
      await next.ready
      expect(next.output()).toMatch(/taken over after \d+ ms of waiting/)
      proxy.setLatency(0)
      // What the old worker could not drain in its 300 ms was left in the journal for this one.
      expect((await next.request({ cmd: 'flush' })).drained).toBe(true)
      await Promise.all([local.connect(), atlas.connect()])
      const [r] = await compareDatabases(local, atlas, db, ['bills'])
      expect(r.localCount).toBe(300)
      assertConverged([r])
      expect((await next.request({ cmd: 'status' })).metrics.journal.recovered).toBeGreaterThan(0)
    } finally {
      proxy.setLatency(0)
      await stopAll([old, next].filter(Boolean))
      await Promise.all([local.close(), atlas.close()])
      fs.rmSync(root, { recursive: true, force: true })
    }
  }, 300_000)
})

describe('scale down: an instance dir nobody holds', () => {
  it('is drained by a remaining instance without a CLI run, dead letters included', async () => {
    const { db, root, env } = setup('adopt', { maxRetries: 0 })
    const local = new MongoClient(servers.local.uri)
    const atlas = new MongoClient(servers.atlas.uri)
    const apps = []
    try {
      await Promise.all([local.connect(), atlas.connect()])
      // An Atlas-only unique index: the second document with u=7 is refused (dead letter).
      await atlas.db(db).collection('bills').createIndex({ u: 1 }, { unique: true })
      const gone = startInstance({ env: { ...env, SYNC_ADOPT_INTERVAL_MS: '0' }, instance: 3 })
      apps.push(gone)
      await gone.ready
      await gone.request({ cmd: 'insert', from: 1000, count: 2, u: 7 })
      await gone.request({ cmd: 'flush' })
      expect((await gone.request({ cmd: 'status' })).deadLetters).toHaveLength(1)
      // Atlas unreachable: instance 3's writes stay in its journal, then it is killed.
      proxy.setMode('blackhole')
      await gone.request({ cmd: 'insert', from: 1, count: 200 })
      gone.child.kill('SIGKILL')
      await gone.exited
      proxy.setMode('pass')
      const stay = startInstance({ env: { ...env, SYNC_ADOPT_INTERVAL_MS: '500' }, instance: 0 })
      apps.push(stay)
      await stay.ready
      await waitFor('instance 0 to adopt instance-3', () => /✓ adopted .*instance-3: drained, 1 dead letter/.test(stay.output()), { timeoutMs: 120000 })
        .catch((e) => { throw new Error(`${e.message}\ninstance 0 said:\n${stay.output()}`) })
      expect((await stay.request({ cmd: 'flush' })).drained).toBe(true)
      const [r] = await compareDatabases(local, atlas, db, ['bills'])
      // Everything but the refused document is on Atlas; that one is a dead letter here now.
      expect(r.localCount).toBe(202)
      expect(r.different).toEqual([])
      expect(r.extra).toEqual([])
      expect(r.missing).toHaveLength(1)
      expect([1000, 1001]).toContain(r.missing[0])
      const dead = (await stay.request({ cmd: 'status' })).deadLetters
      expect(dead.map((d) => Number(d.id.$numberInt))).toEqual(r.missing)
      expect(dead[0].code).toBe(11000)
      // Handed back: the dir's own instance comes back (waiting at most for a pass in progress).
      const back = startInstance({ env: { ...env, SYNC_ADOPT_INTERVAL_MS: '0' }, instance: 3 })
      apps.push(back)
      await back.ready
      expect((await back.request({ cmd: 'status' })).metrics.backlog.total).toBe(0)
    } finally {
      proxy.setMode('pass')
      await stopAll(apps)
      await Promise.all([local.close(), atlas.close()])
      fs.rmSync(root, { recursive: true, force: true })
    }
  }, 300_000)
})
