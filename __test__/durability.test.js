// Durability: a long Atlas outage in bounded memory, one process per data
// dir, prompt exit, dead letters, and recovery past a corrupt journal record.
import { describe, it, expect, beforeAll } from 'vitest'
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'

const require = createRequire(import.meta.url)
const { MongoClient, ObjectId } = require('mongodb')
const { createSync } = require('../index.js')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { waitFor } = require('./helpers/wait.js')

const OUTAGE_MARKS = Number(process.env.DUALSYNC_OUTAGE_MARKS || 100000)
const HOLDER = path.join(__dirname, 'fixtures', 'holder.js')
let servers

const tmpDir = (tag) => fs.mkdtempSync(path.join(os.tmpdir(), `dualsync-${tag}-`))
// A pure mirror (extras policy delete): these tests own their Atlas databases.
const fast = { extrasPolicy: 'delete', workerInterval: 0, connectTimeoutMs: 1000, backoffMinMs: 10, backoffMaxMs: 200, logLevel: 'error' }

function runChild (env, { stdin = 'ignore' } = {}) {
  const child = spawn(process.execPath, [HOLDER], { env: { ...process.env, ...env }, stdio: [stdin, 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { out += d })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, out })))
  return { child, exited, output: () => out }
}

function percentile (sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

beforeAll(async () => {
  servers = await useServers()
})

describe('long outage in bounded memory', () => {
  // FerretDB's update/delete cost grows with the collection size (about
  // 50 ms per statement at 20k documents, where MongoDB uses the _id index),
  // so the documents are spread over small collections, and each is marked
  // in bursts as a busy café would: hot bills are updated many times.
  const COLLECTIONS = 20
  const MARKS_PER_DOC = 10
  const DOCS = Math.ceil(OUTAGE_MARKS / MARKS_PER_DOC)

  it(`keeps ${OUTAGE_MARKS} marks on disk, not in memory, and drains them all`, async () => {
    const db = uniqueDbName('outage_long')
    const client = new MongoClient(servers.local.uri)
    const targets = []
    for (let c = 0; c < COLLECTIONS; c++) {
      const docs = Array.from({ length: Math.ceil(DOCS / COLLECTIONS) }, (_, i) => ({ _id: new ObjectId(), c, i, items: ['coffee', 'cake'], total: i % 37 }))
      await client.db(db).collection(`bills${c}`).insertMany(docs)
      for (const d of docs) targets.push({ collection: `bills${c}`, id: d._id })
    }
    const sync = await createSync({ enabled: true, localUri: `${servers.local.uri}/${db}`, atlasUri: `${servers.atlas.uri}/${db}`, dataDir: tmpDir('long'), queueMaxSize: 1000, batchSize: 200, ...fast })
    try {
      // Latency of the app-facing call before the outage.
      const before = []
      for (const t of targets.slice(0, 2000)) {
        const start = process.hrtime.bigint()
        sync.enqueue(t)
        before.push(Number(process.hrtime.bigint() - start) / 1000)
      }
      expect(await sync.flush({ timeoutMs: 120000 })).toBe(true)
      await servers.atlas.stop()
      const rssStart = process.memoryUsage().rss
      let rssPeak = rssStart
      let maxInMemory = 0
      const during = []
      let marks = 0
      for (const t of targets) {
        for (let k = 0; k < MARKS_PER_DOC; k++) {
          const start = process.hrtime.bigint()
          sync.enqueue(t)
          during.push(Number(process.hrtime.bigint() - start) / 1000)
          if (++marks % 5000 === 0) {
            const m = sync.metrics()
            maxInMemory = Math.max(maxInMemory, m.backlog.memory + m.backlog.inFlight)
            rssPeak = Math.max(rssPeak, process.memoryUsage().rss)
          }
        }
      }
      const m = sync.metrics()
      maxInMemory = Math.max(maxInMemory, m.backlog.memory + m.backlog.inFlight)
      rssPeak = Math.max(rssPeak, process.memoryUsage().rss)
      expect(marks).toBeGreaterThanOrEqual(OUTAGE_MARKS)
      expect(maxInMemory).toBeLessThanOrEqual(1000)
      expect(m.backlog.disk).toBeGreaterThan(0)
      expect(m.journal.bytes).toBeGreaterThan(marks * 20)
      before.sort((a, b) => a - b)
      during.sort((a, b) => a - b)
      console.log(`[outage] ${marks} marks over ${targets.length} documents: enqueue µs p50/p99 before ${percentile(before, 0.5).toFixed(1)}/${percentile(before, 0.99).toFixed(1)}, during ${percentile(during, 0.5).toFixed(1)}/${percentile(during, 0.99).toFixed(1)}; in-memory marks max ${maxInMemory}; RSS ${(rssStart / 2 ** 20).toFixed(0)} → peak ${(rssPeak / 2 ** 20).toFixed(0)} MiB; journal ${(m.journal.bytes / 2 ** 20).toFixed(1)} MiB`)

      await servers.atlas.start()
      const t0 = Date.now()
      const progress = setInterval(() => {
        const p = sync.metrics()
        console.log(`[outage] +${Date.now() - t0} ms: backlog ${JSON.stringify(p.backlog)}, applied ${p.applied.total}, failures ${JSON.stringify(p.failures)}, atlas ${p.atlas.connected}`)
      }, 10000)
      const drained = await sync.flush({ timeoutMs: 600000 })
      clearInterval(progress)
      expect(drained).toBe(true)
      const after = sync.metrics()
      console.log(`[outage] drained in ${Date.now() - t0} ms: ${after.applied.total - m.applied.total} Atlas writes, ${after.coalesced - m.coalesced} marks coalesced`)
      assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, db))
      // Everything acknowledged: the persisted checkpoint reaches the journal's end.
      await waitFor('the checkpoint to reach the end of the journal', () => {
        const j = sync.metrics().journal
        return j.checkpoint >= m.journal.end
      }, { timeoutMs: 10000 })
    } finally {
      await servers.atlas.start().catch(() => {})
      await sync.close({ drainTimeoutMs: 0 })
      await client.close()
    }
  }, 900_000)
})

describe('one process per data dir', () => {
  it('never displaces a live holder: the wait expires with a coded error naming the dir and the holder', async () => {
    const dataDir = tmpDir('lock')
    const db = uniqueDbName('lock')
    const env = { LOCAL_URI: `${servers.local.uri}/${db}`, ATLAS_URI: `${servers.atlas.uri}/${db}`, DATA_DIR: dataDir, MODE: 'hold' }
    const holder = runChild(env, { stdin: 'pipe' })
    await waitFor('the holder to open', () => holder.output().includes('open'))
    const opts = { enabled: true, localUri: env.LOCAL_URI, atlasUri: env.ATLAS_URI, dataDir, ...fast }
    const err = await createSync({ ...opts, lockWaitMs: 300 }).then(() => null, (e) => e)
    expect(err).toBeInstanceOf(Error)
    expect(err.code).toBe('ERR_SYNC_LOCK_TIMEOUT')
    expect(err.message).toContain(dataDir)
    expect(err.message).toContain(`pid ${holder.child.pid}`)
    expect(err.message).toContain('SYNC_LOCK_WAIT_MS=300')
    // A waiting open takes over once the holder exits (pm2 reload's shape).
    let settled = false
    const waiting = createSync({ ...opts, lockWaitMs: 60000 }).finally(() => { settled = true })
    expect(settled).toBe(false)
    holder.child.stdin.end()
    const { code } = await holder.exited
    expect(code).toBe(0)
    const sync = await waiting
    await sync.close()
  })
})

describe('close() releases the data dir', () => {
  it('lets the same process open the same data dir again right after close()', async () => {
    const dataDir = tmpDir('reopen')
    const db = uniqueDbName('reopen')
    for (let i = 0; i < 3; i++) {
      const sync = await createSync({ enabled: true, localUri: `${servers.local.uri}/${db}`, atlasUri: `${servers.atlas.uri}/${db}`, dataDir, ...fast })
      sync.enqueue({ collection: 'again', id: i })
      expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)
      expect(await sync.close()).toBe(true)
    }
  })
})

describe('process exit', () => {
  it('exits promptly after close(), and on its own once idle without close()', async () => {
    const db = uniqueDbName('exit')
    for (const MODE of ['close', 'idle']) {
      const started = Date.now()
      const c = runChild({ LOCAL_URI: `${servers.local.uri}/${db}`, ATLAS_URI: `${servers.atlas.uri}/${db}`, DATA_DIR: tmpDir('exit'), MODE, ENQUEUE: '10', DRAIN_MS: '2000' })
      const deadline = new Promise((resolve) => setTimeout(() => resolve('still running'), 20000).unref())
      const result = await Promise.race([c.exited, deadline])
      if (result === 'still running') c.child.kill('SIGKILL')
      expect(result, `${MODE}: ${c.output()}`).not.toBe('still running')
      expect(result.code, c.output()).toBe(0)
      console.log(`[exit] ${MODE}: process ended ${Date.now() - started} ms after spawn; ${c.output().trim().replace(/\n/g, ' | ')}`)
    }
  })
})

describe('dead letters', () => {
  it('moves a document Atlas keeps refusing aside, keeps the rest flowing, and retries it on demand', async () => {
    const db = uniqueDbName('dead')
    const local = new MongoClient(servers.local.uri)
    const atlas = new MongoClient(servers.atlas.uri)
    const sync = await createSync({ enabled: true, localUri: `${servers.local.uri}/${db}`, atlasUri: `${servers.atlas.uri}/${db}`, dataDir: tmpDir('dead'), maxRetries: 2, ...fast })
    try {
      // An Atlas-only unique index that local does not have.
      await atlas.db(db).collection('users').createIndex({ email: 1 }, { unique: true })
      const users = local.db(db).collection('users')
      await users.insertMany([{ _id: 'a', email: 'x@cafe' }, { _id: 'b', email: 'x@cafe' }, { _id: 'c', email: 'c@cafe' }])
      sync.enqueue([{ collection: 'users', id: 'a' }, { collection: 'users', id: 'b' }, { collection: 'users', id: 'c' }])
      expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)
      const dead = sync.deadLetters()
      expect(dead).toHaveLength(1)
      expect(dead[0]).toMatchObject({ collection: 'users', code: 11000, attempts: 3 })
      expect(['a', 'b']).toContain(dead[0].id)
      expect(dead[0].message).toMatch(/duplicate key|E11000/i)
      expect(await atlas.db(db).collection('users').countDocuments({ _id: 'c' })).toBe(1)
      const m = sync.metrics()
      expect(m.deadLetters).toBe(1)
      expect(m.failures.permanent).toBe(3)

      // Later writes keep flowing past it.
      await users.insertOne({ _id: 'd', email: 'd@cafe' })
      sync.enqueue({ collection: 'users', id: 'd' })
      expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)
      expect(await atlas.db(db).collection('users').countDocuments({ _id: 'd' })).toBe(1)

      // Fix the cause, retry: applied and gone from the store.
      await atlas.db(db).collection('users').dropIndex('email_1')
      expect(sync.retryDeadLetters({ collection: 'users' })).toBe(1)
      expect(await sync.flush({ timeoutMs: 30000 })).toBe(true)
      expect(sync.deadLetters()).toHaveLength(0)
      assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, db, ['users']))
    } finally {
      await sync.close({ drainTimeoutMs: 0 })
      await local.close()
      await atlas.close()
    }
  })
})

describe('journal recovery', () => {
  it('skips a corrupt record in the middle, recovers the rest and repairs by full sync', async () => {
    const db = uniqueDbName('corrupt')
    const dataDir = tmpDir('corrupt')
    const local = new MongoClient(servers.local.uri)
    await local.db(db).collection('held').insertMany(Array.from({ length: 200 }, (_, i) => ({ _id: `doc-${i}`, i })))
    // A child journals 200 marks while Atlas is unreachable, then closes without draining.
    const c = runChild({ LOCAL_URI: `${servers.local.uri}/${db}`, ATLAS_URI: 'mongodb://127.0.0.1:9/none', DATA_DIR: dataDir, MODE: 'close', ENQUEUE: '200', DRAIN_MS: '0' })
    expect((await c.exited).code, c.output()).toBe(0)
    const jdir = path.join(dataDir, 'journal')
    const segment = fs.readdirSync(jdir).filter((f) => f.startsWith('segment-')).sort()[0]
    const file = path.join(jdir, segment)
    const bytes = fs.readFileSync(file)
    expect(bytes.length).toBeGreaterThan(1000)
    bytes[Math.floor(bytes.length / 2)] ^= 0xff
    fs.writeFileSync(file, bytes)

    const lines = []
    const logger = { debug () {}, info: (m) => lines.push(m), warn: (m) => lines.push(m), error: (m) => lines.push(m) }
    const sync = await createSync({ enabled: true, localUri: `${servers.local.uri}/${db}`, atlasUri: `${servers.atlas.uri}/${db}`, dataDir, logger, ...fast, logLevel: 'info' })
    try {
      const m = sync.metrics()
      expect(m.journal.corruptRecords).toBeGreaterThanOrEqual(1)
      expect(m.journal.recovered).toBeGreaterThanOrEqual(190)
      expect(m.journal.recovered).toBeLessThan(200)
      await waitFor('the recovery log lines', () => lines.some((l) => /Loaded \d+ operations from persisted queue/.test(l)) && lines.some((l) => /segment .*offset \d+/.test(l)))
      const job = m.fullSync ? sync.job(m.fullSync.id) : null
      expect(job).toBeTruthy()
      await job.done
      expect(await sync.flush({ timeoutMs: 60000 })).toBe(true)
      assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, db, ['held']))
    } finally {
      await sync.close({ drainTimeoutMs: 0 })
      await local.close()
    }
  })
})
