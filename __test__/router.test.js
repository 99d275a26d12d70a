// The admin router over real HTTP, on Express 5 and Express 4, against a real
// engine syncing between two real servers: authentication on every route,
// pause/resume, dead letters (a real duplicate-key failure on "Atlas"),
// full sync / verify jobs, health codes, and that no response or log line
// ever carries the database password.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { openAdminSync } from './helpers/adminsync.js'

const require = createRequire(import.meta.url)
const express5 = require('express')
const express4 = require('express4')
const request = require('supertest')
const { repairIdIndex } = require('../scripts/testbed-idindex.js')
const { createSync } = require('../index.js')
const { createRouter } = require('../lib/router.js')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')


const TOKEN = 'secret-token'
const { PASSWORD, credUri, secrets } = require('./helpers/admin.js')

const seen = [] // every response body and log line, checked for the password at the end
const logs = []
const logger = Object.fromEntries(['debug', 'info', 'warn', 'error'].map((l) => [l, (m) => logs.push(`${l} ${m}`)]))

let servers, dbName, local, atlas, sync, disabled
const apps = {}
const listening = []

function listen (app) {
  return new Promise((resolve) => {
    const server = app.listen(0, '127.0.0.1', () => {
      listening.push(server)
      resolve(`http://127.0.0.1:${server.address().port}`)
    })
  })
}

/** One HTTP call, recorded. auth: true (right token), a string (that token), false (none). */
async function call (base, method, url, { auth = true, body, headers = {} } = {}) {
  let r = request(base)[method](url)
  if (auth === true) r = r.set('Authorization', `Bearer ${TOKEN}`)
  else if (typeof auth === 'string') r = r.set('Authorization', `Bearer ${auth}`)
  for (const [k, v] of Object.entries(headers)) r = r.set(k, v)
  if (body !== undefined) r = r.send(body)
  const res = await r
  seen.push(`${method.toUpperCase()} ${url} → ${res.status} ${res.text}`)
  return res
}

async function insertAndEnqueue (s, coll, docs) {
  const res = await local.db(dbName).collection(coll).insertMany(docs)
  s.enqueue(Object.values(res.insertedIds).map((id) => ({ collection: coll, id })))
  return Object.values(res.insertedIds)
}

const { waitFor } = require('./helpers/wait.js')
const until = (what, fn, timeoutMs = 30_000) => waitFor(what, fn, { timeoutMs, intervalMs: 50 })

beforeAll(async () => {
  ;({ servers, dbName, local, atlas, sync } = await openAdminSync('router', TOKEN, {
    workerInterval: 0,
    logLevel: 'debug',
    logger
  }))
  disabled = await createSync({ enabled: false, logger })
  for (const [name, express] of [['express5', express5], ['express4', express4]]) {
    const app = express()
    app.use('/admin', createRouter(sync, { express, publicHealth: true }))
    apps[name] = await listen(app)
  }
})

afterAll(async () => {
  await Promise.all(listening.map((s) => new Promise((resolve) => s.close(resolve))))
  await sync?.close({ drainTimeoutMs: 0 })
  await local?.close()
  await atlas?.close()
})

// Every admin route: [method, path, body]
const ROUTES = [
  ['get', '/health'],
  ['get', '/metrics'],
  ['get', '/metrics/prometheus'],
  ['post', '/pause', {}],
  ['post', '/resume', {}],
  ['post', '/full', {}],
  ['get', '/full/some-id'],
  ['delete', '/full/some-id'],
  ['get', '/verify'],
  ['get', '/dead-letters'],
  ['post', '/dead-letters/retry', {}]
]

describe.each(['express5', 'express4'])('authentication on %s', (name) => {
  it.each(ROUTES)('%s %s: 401 without credentials, 403 with a wrong token', async (method, url, body) => {
    const base = apps[name]
    const none = await call(base, method, `/admin${url}`, { auth: false, body })
    expect(none.status).toBe(401)
    expect(none.headers['www-authenticate']).toMatch(/^Bearer realm="dualsync"/)
    expect(none.body.error).toMatch(/Bearer/)

    const basic = await call(base, method, `/admin${url}`, { auth: false, body, headers: { Authorization: 'Basic dXNlcjpwYXNz' } })
    expect(basic.status).toBe(401)

    const wrong = await call(base, method, `/admin${url}`, { auth: 'secret-tokem', body })
    expect(wrong.status).toBe(403)
    expect(wrong.body.error).toBe('invalid admin token')
    const longer = await call(base, method, `/admin${url}`, { auth: `${TOKEN}x`, body })
    expect(longer.status).toBe(403)
  })

  it('answers 2xx with the right token on every route that needs no job', async () => {
    const base = apps[name]
    const expectStatus = async (method, url, status, body) => {
      const res = await call(base, method, `/admin${url}`, { body })
      expect(res.status, `${method} ${url}: ${res.text}`).toBe(status)
      return res
    }
    const health = await expectStatus('get', '/health', 200)
    expect(['healthy', 'degraded']).toContain(health.body.status)
    expect(Array.isArray(health.body.reasons)).toBe(true)
    const metrics = await expectStatus('get', '/metrics', 200)
    expect(metrics.body.enabled).toBe(true)
    expect(metrics.headers['cache-control']).toBe('no-store')
    const prom = await expectStatus('get', '/metrics/prometheus', 200)
    expect(prom.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8')
    expect(prom.text).toMatch(/^dualsync_up 1$/m)
    expect((await expectStatus('post', '/pause', 200, {})).body.state).toBe('paused')
    expect((await expectStatus('post', '/resume', 200, {})).body.state).toBe('running')
    expect((await expectStatus('get', '/dead-letters', 200)).body).toHaveProperty('deadLetters')
    expect((await expectStatus('post', '/dead-letters/retry', 200, {})).body).toHaveProperty('requeued')
    const page = await expectStatus('get', '/dashboard', 200)
    expect(page.headers['content-type']).toMatch(/^text\/html/)
    expect(page.text).toContain('id="backlog-total"')
    // The page is static in token mode; a token in the URL is refused everywhere.
    const bare = await call(base, 'get', '/admin/dashboard', { auth: false })
    expect(bare.status).toBe(200)
    expect(bare.headers['referrer-policy']).toBe('no-referrer')
    const viaQuery = await call(base, 'get', `/admin/dashboard?token=${TOKEN}`, { auth: false })
    expect(viaQuery.status).toBe(400)
    expect(viaQuery.body.code).toBe('ERR_TOKEN_IN_URL')
    expect((await call(base, 'get', `/admin/metrics?token=${TOKEN}`, { auth: false })).status).toBe(401)
  })

  it('serves /health/public without credentials, revealing only the status', async () => {
    const res = await call(apps[name], 'get', '/admin/health/public', { auth: false })
    expect(res.status).toBe(200)
    expect(Object.keys(res.body)).toEqual(['status'])
    expect(['healthy', 'degraded']).toContain(res.body.status)
  })

  it('leaves paths it does not own to the app', async () => {
    const res = await call(apps[name], 'get', '/admin/not-ours', { auth: false })
    expect(res.status).toBe(404)
  })
})

describe('configuration', () => {
  it('refuses every route with 403 and explains itself when no token or auth is configured', async () => {
    expect(disabled.config.adminToken).toBeUndefined()
    const app = express5()
    app.use('/admin', createRouter(disabled, { publicHealth: false }))
    const base = await listen(app)
    for (const [method, url, body] of ROUTES) {
      for (const auth of [false, TOKEN]) {
        const res = await call(base, method, `/admin${url}`, { auth, body })
        expect(res.status, `${method} ${url}`).toBe(403)
        expect(res.body.error).toMatch(/SYNC_ADMIN_TOKEN/)
        expect(res.body.error).toMatch(/auth/)
      }
    }
    expect((await call(base, 'get', '/admin/health/public', { auth: false })).status).toBe(404)
  })

  it('uses the app\'s own auth middleware instead of the token when given', async () => {
    const app = express4()
    const auth = (req, res, next) => (req.get('x-role') === 'admin' ? next() : res.status(401).json({ error: 'app login required' }))
    app.use('/ops', createRouter(sync, { express: express4, auth }))
    const base = await listen(app)
    const ok = await call(base, 'get', '/ops/metrics', { auth: false, headers: { 'x-role': 'admin' } })
    expect(ok.status).toBe(200)
    expect(ok.body.enabled).toBe(true)
    const page = await call(base, 'get', '/ops/dashboard', { auth: false, headers: { 'x-role': 'admin' } })
    expect(page.status).toBe(200)
    const denied = await call(base, 'get', '/ops/metrics', { auth: true })
    expect(denied.status).toBe(401)
    expect(denied.body.error).toBe('app login required')
  })

  it('takes options.token over the configured SYNC_ADMIN_TOKEN', async () => {
    const app = express5()
    app.use('/x', createRouter(sync, { token: 'another-token-value' }))
    const base = await listen(app)
    expect((await call(base, 'get', '/x/metrics', { auth: TOKEN })).status).toBe(403)
    expect((await call(base, 'get', '/x/metrics', { auth: 'another-token-value' })).status).toBe(200)
  })

  it('rejects invalid options with a TypeError naming them', () => {
    expect(() => createRouter({})).toThrow(/createSync\(\) returned/)
    expect(() => createRouter(sync, { tokn: 'x' })).toThrow(/unknown option\(s\) tokn/)
    expect(() => createRouter(sync, { token: '' })).toThrow(/options\.token must be a non-empty string/)
    expect(() => createRouter(sync, { auth: 'yes' })).toThrow(/options\.auth must be a middleware/)
  })

  it('reports a disabled sync without failing', async () => {
    const app = express5()
    app.use('/admin', createRouter(disabled, { token: TOKEN, publicHealth: true }))
    const base = await listen(app)
    const m = await call(base, 'get', '/admin/metrics')
    expect(m.status).toBe(200)
    expect(m.body).toEqual({ enabled: false, state: 'disabled' })
    const prom = await call(base, 'get', '/admin/metrics/prometheus')
    expect(prom.text).toMatch(/^dualsync_enabled 0$/m)
    expect(prom.text).not.toMatch(/dualsync_enqueued_total/)
    const h = await call(base, 'get', '/admin/health')
    expect(h.status).toBe(200)
    expect(h.body.status).toBe('disabled')
    const full = await call(base, 'post', '/admin/full', { body: {} })
    expect(full.status).toBe(409)
    expect(full.body.error).toMatch(/SYNC_ENABLED=false/)
  })
})

describe('operations (Express 5)', () => {
  const base = () => apps.express5

  it('pause: writes are journaled but not applied; resume drains them', async () => {
    expect((await call(base(), 'post', '/admin/pause', { body: {} })).body.state).toBe('paused')
    const before = (await call(base(), 'get', '/admin/metrics')).body
    expect(before.state).toBe('paused')
    await insertAndEnqueue(sync, 'paused', Array.from({ length: 20 }, (_, i) => ({ i })))
    // A flush cannot complete while paused: its timeout is the proof that nothing drained.
    expect(await sync.flush({ timeoutMs: 1500 })).toBe(false)
    const during = (await call(base(), 'get', '/admin/metrics')).body
    expect(during.enqueued - before.enqueued).toBe(20)
    expect(during.applied.total).toBe(before.applied.total)
    expect(during.backlog.total).toBeGreaterThanOrEqual(20)
    const health = (await call(base(), 'get', '/admin/health')).body
    expect(health.status).toBe('degraded')
    expect(health.reasons).toContain('sync is paused')
    expect((await call(base(), 'get', '/admin/health/public', { auth: false })).status).toBe(200)

    expect((await call(base(), 'post', '/admin/resume', { body: {} })).body.state).toBe('running')
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)
    const after = (await call(base(), 'get', '/admin/metrics')).body
    expect(after.applied.total - before.applied.total).toBe(20)
    expect(after.backlog.total).toBe(0)
    assertConverged(await compareDatabases(local, atlas, dbName, ['paused']))
  })

  it('lists, filters and retries real dead letters', async () => {
    // A unique index that exists on "Atlas" only: the second document is a permanent duplicate-key error there.
    await atlas.db(dbName).collection('dl').createIndex({ email: 1 }, { unique: true, name: 'email_unique' })
    const ids = await insertAndEnqueue(sync, 'dl', [{ email: 'a@example.com', n: 1 }])
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)
    ids.push(...await insertAndEnqueue(sync, 'dl', [{ email: 'a@example.com', n: 2 }]))
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)

    const listed = await call(base(), 'get', '/admin/dead-letters?collection=dl')
    expect(listed.status).toBe(200)
    expect(listed.body.total).toBe(1)
    const [dl] = listed.body.deadLetters
    expect(dl).toMatchObject({ db: dbName, collection: 'dl', code: 11000 })
    expect(dl.attempts).toBeGreaterThanOrEqual(1)
    expect(JSON.stringify(dl.id)).toContain(ids[1].toHexString())
    expect((await call(base(), 'get', '/admin/dead-letters?code=11000')).body.total).toBe(1)
    expect((await call(base(), 'get', '/admin/dead-letters?code=121')).body.total).toBe(0)
    expect((await call(base(), 'get', '/admin/dead-letters?collection=other')).body.total).toBe(0)
    expect((await call(base(), 'get', '/admin/metrics')).body.deadLetters).toBe(1)
    const h = (await call(base(), 'get', '/admin/health')).body
    expect(h.status).toBe('degraded')
    expect(h.reasons.join(';')).toMatch(/dead letter/)

    const bad = await call(base(), 'get', '/admin/dead-letters?code=abc')
    expect(bad.status).toBe(400)
    expect(bad.body.error).toMatch(/code must be an integer/)
    const badBody = await call(base(), 'post', '/admin/dead-letters/retry', { body: { collection: 5 } })
    expect(badBody.status).toBe(400)
    expect(badBody.body.error).toMatch(/collection must be a non-empty string/)
    const badJson = await call(base(), 'post', '/admin/dead-letters/retry', { body: '{"collection":', headers: { 'Content-Type': 'application/json' } })
    expect(badJson.status).toBe(400)
    expect(badJson.body.error).toMatch(/invalid JSON body/)

    // Fix the cause on Atlas, then retry through the route: both documents arrive.
    await atlas.db(dbName).collection('dl').dropIndex('email_unique')
    expect((await call(base(), 'post', '/admin/dead-letters/retry', { body: { collection: 'other' } })).body.requeued).toBe(0)
    const retried = await call(base(), 'post', '/admin/dead-letters/retry', { body: { collection: 'dl', code: 11000 } })
    expect(retried.status).toBe(200)
    expect(retried.body.requeued).toBe(1)
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)
    expect((await call(base(), 'get', '/admin/dead-letters')).body.total).toBe(0)
    assertConverged(await compareDatabases(local, atlas, dbName, ['dl']))
  })
})

describe('full sync and verify jobs (Express 5)', () => {
  const base = () => apps.express5
  const BIG = 'bulk'

  beforeAll(async () => {
    // Written locally without enqueue: only a full sync can bring them to Atlas.
    const docs = Array.from({ length: 4000 }, (_, i) => ({ i, payload: 'x'.repeat(200) }))
    await local.db(dbName).collection(BIG).insertMany(docs)
    await local.db(dbName).collection('small').insertMany([{ a: 1 }, { a: 2 }, { a: 3 }])
    // FerretDB v1 would scan the table for every write by _id (see testbed-idindex.js): the
    // full sync's 4000 upserts into Atlas would each read the whole collection.
    await atlas.db(dbName).createCollection(BIG)
    for (const server of [servers.local, servers.atlas]) repairIdIndex(server, dbName, BIG, { required: true })
  })

  it('answers 404 for unknown jobs', async () => {
    const get = await call(base(), 'get', '/admin/full/no-such-job')
    expect(get.status).toBe(404)
    expect(get.body.error).toMatch(/no-such-job/)
    expect((await call(base(), 'delete', '/admin/full/no-such-job')).status).toBe(404)
  })

  it('validates the POST /full body', async () => {
    const res = await call(base(), 'post', '/admin/full', { body: { collections: 'small' } })
    expect(res.status).toBe(400)
    expect(res.body.error).toMatch(/collections must be a non-empty array/)
    const unknown = await call(base(), 'post', '/admin/full', { body: { dryrun: true } })
    expect(unknown.status).toBe(400)
    expect(unknown.body.error).toMatch(/unknown field\(s\) "dryrun"/)
  })

  it('verify reports differences without repairing; ?wait=true returns the report', async () => {
    const res = await call(base(), 'get', `/admin/verify?wait=true&collections=small`)
    expect(res.status).toBe(200)
    expect(res.body.job).toMatchObject({ kind: 'verify', state: 'done' })
    const report = res.body.job.reports.find((r) => r.collection === 'small')
    expect(report).toMatchObject({ localCount: 3, atlasCount: 0, missingOnAtlas: 3 })
    // Scope and extras policy per collection, in the report and in GET /metrics.
    expect(report).toMatchObject({ scope: null, extrasPolicy: 'delete', extrasReported: 0, extrasDeleted: 0 })
    const metrics = await call(base(), 'get', '/admin/metrics')
    expect(metrics.body.scope.rules).toEqual({ '*': { scope: null, extrasPolicy: 'delete' } })
    expect(metrics.body.scope).toMatchObject({ extrasReported: expect.any(Number), extrasDeleted: expect.any(Number) })
    expect(await atlas.db(dbName).collection('small').countDocuments()).toBe(0)

    const started = await call(base(), 'get', '/admin/verify?collections=small')
    expect(started.status).toBe(202)
    expect(started.body.jobId).toBe(started.body.job.id)
    expect(started.body.job.kind).toBe('verify')
    // One job at a time: let this one end before the next test starts a full sync.
    const final = await until('the verify job to end', async () => {
      const j = (await call(base(), 'get', `/admin/full/${started.body.jobId}`)).body.job
      return j.state !== 'running' && j
    })
    expect(final.state).toBe('done')
  })

  it('starts one full sync at a time, reports progress and repairs Atlas', async () => {
    const [a, b] = await Promise.all([
      call(base(), 'post', '/admin/full', { body: { collections: [BIG, 'small'] } }),
      call(base(), 'post', '/admin/full', { body: { collections: [BIG, 'small'] } })
    ])
    expect(a.status).toBe(202)
    expect(b.status).toBe(202)
    expect(a.body.job.kind).toBe('fullSync')
    if (a.body.jobId !== b.body.jobId) {
      // Only allowed when the first had already finished: never two at once.
      const first = (await call(base(), 'get', `/admin/full/${a.body.jobId}`)).body.job
      expect(Date.parse(first.finishedAt)).toBeLessThanOrEqual(Date.parse(b.body.job.startedAt))
    }
    const id = a.body.jobId
    const done = await until('the full sync to finish', async () => {
      const r = await call(base(), 'get', `/admin/full/${id}`)
      expect(r.status).toBe(200)
      return r.body.job.state !== 'running' && r.body.job
    }, 120_000)
    expect(done.state).toBe('done')
    expect(done.collectionsDone).toBe(2)
    expect(done.docsScanned).toBeGreaterThanOrEqual(4003)
    expect(done.differences).toBeGreaterThanOrEqual(4003)
    expect(await sync.flush({ timeoutMs: 60_000 })).toBe(true)
    assertConverged(await compareDatabases(local, atlas, dbName, [BIG, 'small']))

    const verify = await call(base(), 'get', `/admin/verify?wait=true&collections=${BIG},small`)
    expect(verify.status).toBe(200)
    expect(verify.body.job.differences).toBe(0)
  })

  it('cancels a running job with DELETE /full/:id', async () => {
    await atlas.db(dbName).collection(BIG).deleteMany({})
    const started = await call(base(), 'post', '/admin/full', { body: { collections: [BIG], dryRun: true } })
    expect(started.status).toBe(202)
    const cancelled = await call(base(), 'delete', `/admin/full/${started.body.jobId}`)
    expect(cancelled.status).toBe(200)
    const final = await until('the cancelled job to stop', async () => {
      const j = (await call(base(), 'get', `/admin/full/${started.body.jobId}`)).body.job
      return j.state !== 'running' && j
    })
    expect(final.state).toBe('cancelled')
  })
})

describe('full sync of everything (Express 5)', () => {
  it('POST /full with an empty body scans every collection and converges the database', async () => {
    await local.db(dbName).collection('late').insertMany([{ z: 1 }, { z: 2 }])
    const res = await call(apps.express5, 'post', '/admin/full', { body: {} })
    expect(res.status, res.text).toBe(202)
    const done = await until('the full sync to finish', async () => {
      const j = (await call(apps.express5, 'get', `/admin/full/${res.body.jobId}`)).body.job
      return j.state !== 'running' && j
    }, 120_000)
    expect(done.state).toBe('done')
    expect(done.reports.map((r) => r.collection)).toContain('late')
    expect(await sync.flush({ timeoutMs: 60_000 })).toBe(true)
    assertConverged(await compareDatabases(local, atlas, dbName))
  })
})

describe('closed engine and secrets', () => {
  it('never returns or logs the database password, even on connection errors', async () => {
    // An engine whose "Atlas" is unreachable: its errors carry the URI.
    const broken = await createSync({
      enabled: true,
      localUri: credUri(servers.local.uri, dbName),
      atlasUri: `mongodb://dsuser:${PASSWORD}@127.0.0.1:1/${dbName}?authMechanism=PLAIN&authSource=%24external`,
      dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-router-broken-')),
      adminToken: TOKEN,
      connectTimeoutMs: 200,
      backoffMinMs: 10,
      backoffMaxMs: 50,
      logLevel: 'debug',
      logger
    })
    try {
      const app = express4()
      app.use('/b', createRouter(broken, { express: express4, publicHealth: true }))
      const b = await listen(app)
      await insertAndEnqueue(broken, 'secret', [{ x: 1 }])
      await until('an Atlas error to be recorded', () => broken.metrics().atlas.lastError)
      const m = await call(b, 'get', '/b/metrics')
      expect(m.body.atlas.connected).toBe(false)
      expect(m.body.atlas.lastError).toBeTruthy()
      await call(b, 'get', '/b/metrics/prometheus')
      await call(b, 'get', '/b/health')
      await call(b, 'get', '/b/health/public', { auth: false })
      await call(b, 'get', '/b/dead-letters')
    } finally {
      await broken.close({ drainTimeoutMs: 0 })
    }
    const everything = [...seen, ...logs, JSON.stringify(sync.metrics()), JSON.stringify(sync.deadLetters())]
    expect(seen.length).toBeGreaterThan(4)
    // The broken engine's connection errors did carry its URI (redacted): the check below is not vacuous.
    expect(logs.some((l) => l.includes('***:***@127.0.0.1:1/'))).toBe(true)
    const leaks = everything.filter((t) => secrets().some((secret) => t.includes(secret)))
    expect(leaks).toEqual([])
  })

  it('answers 503 on health and metrics once the engine is closed, and up=0 in Prometheus', async () => {
    const s = await createSync({
      enabled: true,
      localUri: credUri(servers.local.uri, dbName),
      atlasUri: credUri(servers.atlas.uri, dbName),
      dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-router-closed-')),
      adminToken: TOKEN,
      logger
    })
    const app = express5()
    app.use('/c', createRouter(s, { publicHealth: true }))
    const b = await listen(app)
    expect((await call(b, 'get', '/c/health')).status).toBe(200)
    await s.close({ drainTimeoutMs: 1000 })
    const h = await call(b, 'get', '/c/health')
    expect(h.status).toBe(503)
    expect(h.body).toMatchObject({ status: 'unhealthy', reasons: ['sync engine is closed'] })
    expect((await call(b, 'get', '/c/health/public', { auth: false })).body).toEqual({ status: 'unhealthy' })
    expect((await call(b, 'get', '/c/metrics')).status).toBe(503)
    const prom = await call(b, 'get', '/c/metrics/prometheus')
    expect(prom.status).toBe(200)
    expect(prom.text).toMatch(/^dualsync_up 0$/m)
    const pause = await call(b, 'post', '/c/pause', { body: {} })
    expect(pause.status).toBe(503)
    expect(pause.body.error).toMatch(/closed/)
  })
})
