// The admin surface against the attacks and outages a café's POS meets:
// a cross-site form post riding the manager's session cookie (CSRF), the
// token leaking through a URL, credentials leaking through any log line,
// error, metric or HTTP body (in raw and percent-decoded form, and with a
// one-letter password), and an Atlas outage failing the app's liveness check.
// Real engine, real servers (Atlas side: a closed port = Atlas unreachable).
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'

const require = createRequire(import.meta.url)
const express = require('express')
const request = require('supertest')
const { MongoClient } = require('mongodb')
const { createSync } = require('../index.js')
const { createRouter } = require('../lib/router.js')
const { scrub } = require('../lib/redact.js')
const { waitFor } = require('./helpers/wait.js')

const TOKEN = 'admin-token-for-tests'
// Percent-encoded in the URI ('@' and ':' must be); the driver and users see the decoded form.
const LONG_RAW = 'Pw%40Long%3A77x'
const LONG_DECODED = 'Pw@Long:77x'
const SHORT = 'e' // one letter: masking every "e" would garble every line

let servers, dbName, local
const logs = []
const logger = Object.fromEntries(['debug', 'info', 'warn', 'error'].map((l) => [l, (m) => logs.push(`${l} ${m}`)]))
const engines = []

function withCreds (base, user, pass, db) {
  return `${base.replace('mongodb://', `mongodb://${user}:${pass}@`)}/${db}?authMechanism=PLAIN&authSource=%24external`
}

async function open (extra) {
  const s = await createSync({
    enabled: true,
    dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-adminsec-')),
    adminToken: TOKEN,
    workerInterval: 0,
    backoffMinMs: 10,
    backoffMaxMs: 50,
    connectTimeoutMs: 300,
    logLevel: 'debug',
    logger,
    ...extra
  })
  engines.push(s)
  return s
}

beforeAll(async () => {
  delete process.env.SYNC_ADMIN_TOKEN
  servers = await useServers()
  dbName = uniqueDbName('adminsec')
  local = new MongoClient(servers.local.uri)
})

afterAll(async () => {
  for (const s of engines) await s.close({ drainTimeoutMs: 0 })
  await local?.close()
})

describe('CSRF on state-changing routes with cookie auth', () => {
  let sync, app
  beforeAll(async () => {
    sync = await open({ localUri: servers.local.uri + '/' + dbName, atlasUri: servers.atlas.uri + '/' + dbName, localDb: dbName })
    app = express()
    // The app's own session auth: a cookie the browser attaches to every request, cross-site forms included.
    const cookieAuth = (req, res, next) => (/(^|; )session=manager(;|$)/.test(req.headers.cookie || '') ? next() : res.status(401).json({ error: 'login' }))
    app.use('/admin', createRouter(sync, { express, auth: cookieAuth }))
  })

  const forged = (method, url, headers = {}) => request(app)[method](url)
    .set('Cookie', 'session=manager')
    .set('Content-Type', 'application/x-www-form-urlencoded')
    .set(headers)
    .send('x=1')

  it.each([
    ['post', '/admin/pause'],
    ['post', '/admin/resume'],
    ['post', '/admin/full'],
    ['post', '/admin/dead-letters/retry'],
    ['delete', '/admin/full/some-job']
  ])('%s %s: a form-encoded cross-origin post is refused with 403', async (method, url) => {
    const crossSite = await forged(method, url, { Origin: 'https://evil.example', 'Sec-Fetch-Site': 'cross-site' })
    expect(crossSite.status, crossSite.text).toBe(403)
    expect(crossSite.body.code).toBe('ERR_CSRF')
    // An old browser that sends neither header: the simple (form) request alone is refused.
    const noHeaders = await forged(method, url)
    expect(noHeaders.status, noHeaders.text).toBe(403)
    expect(noHeaders.body.error).toMatch(/non-simple request/)
    // A same-site sibling (another app on the same domain) is cross-origin too.
    const sameSite = await forged(method, url, { 'Sec-Fetch-Site': 'same-site' })
    expect(sameSite.status).toBe(403)
    expect(sync.metrics().state).toBe('running')
  })

  it('lets the same-origin JSON request through, and a bearer-token client too', async () => {
    const host = 'pos.local:8080'
    const paused = await request(app).post('/admin/pause')
      .set('Host', host).set('Cookie', 'session=manager').set('Origin', `http://${host}`)
      .set('Sec-Fetch-Site', 'same-origin').set('Content-Type', 'application/json').send('{}')
    expect(paused.status, paused.text).toBe(200)
    expect(paused.body.state).toBe('paused')
    // A JSON post from another origin is still refused (Origin check).
    const other = await request(app).post('/admin/resume')
      .set('Host', host).set('Cookie', 'session=manager').set('Origin', 'http://evil.example')
      .set('Content-Type', 'application/json').send('{}')
    expect(other.status).toBe(403)
    expect(sync.metrics().state).toBe('paused')
    const resumed = await request(app).post('/admin/resume')
      .set('Cookie', 'session=manager').set('X-Dualsync-Request', '1')
    expect(resumed.status, resumed.text).toBe(200)
    expect(sync.metrics().state).toBe('running')
  })

  it('token mode: a bearer client (curl, scripts) needs nothing more; a token in the URL is refused', async () => {
    const app2 = express()
    app2.use('/admin', createRouter(sync, { express }))
    const res = await request(app2).post('/admin/pause').set('Authorization', `Bearer ${TOKEN}`)
    expect(res.status, res.text).toBe(200)
    expect((await request(app2).post('/admin/resume').set('Authorization', `Bearer ${TOKEN}`)).status).toBe(200)
    const inUrl = await request(app2).get(`/admin/dashboard?token=${TOKEN}`)
    expect(inUrl.status).toBe(400)
    expect(inUrl.body.code).toBe('ERR_TOKEN_IN_URL')
    expect(inUrl.text).not.toContain(TOKEN)
    expect((await request(app2).get(`/admin/metrics?token=${TOKEN}`)).status).toBe(401)
  })
})

describe('liveness vs sync status during an Atlas outage', () => {
  it('GET /live stays 200 while /health answers 503 for Atlas unreachable', async () => {
    const sync = await open({
      localUri: servers.local.uri + '/' + dbName,
      atlasUri: `mongodb://127.0.0.1:1/${dbName}`,
      localDb: dbName,
      healthAtlasDownMs: 1
    })
    const app = express()
    app.use('/admin', createRouter(sync, { express, publicHealth: true }))
    await local.db(dbName).collection('live').insertOne({ _id: 'l1' })
    sync.enqueue({ collection: 'live', id: 'l1' })
    await waitFor('health to go unhealthy for Atlas', async () => {
      const h = await request(app).get('/admin/health').set('Authorization', `Bearer ${TOKEN}`)
      return h.status === 503 && /Atlas unreachable/.test(h.body.reasons.join(' '))
    }, { timeoutMs: 60_000, intervalMs: 50 })
    expect((await request(app).get('/admin/health/public')).status).toBe(503)
    const live = await request(app).get('/admin/live')
    expect(live.status).toBe(200)
    expect(live.body).toEqual({ status: 'alive' })
  })
})

describe('one redactor: raw, decoded and short passwords', () => {
  it('the JS scrub masks a one-letter password without garbling, and both forms of a long one', () => {
    const shortUri = withCreds('mongodb://127.0.0.1:1', 'dsuser', SHORT, 'd')
    expect(scrub(`retrying ${shortUri} as dsuser:${SHORT} every second`, [shortUri]))
      .toBe('retrying mongodb://***:***@127.0.0.1:1/d?authMechanism=PLAIN&authSource=%24external as ***:*** every second')
    const longUri = withCreds('mongodb://127.0.0.1:1', 'dsuser', LONG_RAW, 'd')
    const out = scrub(`pw ${LONG_RAW} / ${LONG_DECODED}; uri ${longUri}`, [longUri])
    expect(out).not.toContain(LONG_RAW)
    expect(out).not.toContain(LONG_DECODED)
    expect(out).toContain('uri mongodb://***:***@127.0.0.1:1/d')
  })

  it('no log line, error, metric or HTTP body carries either form of either password', async () => {
    const sync = await open({
      localUri: withCreds(servers.local.uri, 'dsuser', SHORT, dbName),
      atlasUri: withCreds('mongodb://127.0.0.1:1', 'dsuser', LONG_RAW, dbName),
      localDb: dbName
    })
    const app = express()
    app.use('/admin', createRouter(sync, { express, publicHealth: true }))
    const bodies = []
    const get = async (url) => {
      const r = await request(app).get(url).set('Authorization', `Bearer ${TOKEN}`)
      bodies.push(`${url} ${r.status} ${r.text}`)
      return r
    }
    await local.db(dbName).collection('sec').insertOne({ _id: 's1' })
    sync.enqueue({ collection: 'sec', id: 's1' })
    await waitFor('an Atlas error', () => sync.metrics().atlas.lastError, { timeoutMs: 60_000 })
    const errors = []
    try { sync.enqueue({ collection: '', id: 1 }) } catch (e) { errors.push(e.message) }
    // waitMs 0: one attempt, so the job fails with Atlas's error (a job waits for Atlas by default).
    const job = sync.verify({ waitMs: 0 })
    const report = await job.done.catch((e) => ({ error: e.message }))
    errors.push(JSON.stringify(report))
    for (const url of ['/admin/metrics', '/admin/metrics/prometheus', '/admin/health', '/admin/health/public', '/admin/dead-letters', '/admin/live']) await get(url)
    bodies.push(JSON.stringify(sync.metrics()), JSON.stringify(sync.health()))

    const everything = [...logs, ...errors, ...bodies]
    expect(logs.length).toBeGreaterThan(3)
    expect(errors.length).toBe(2)
    const leaks = everything.filter((t) => t.includes(LONG_RAW) || t.includes(LONG_DECODED) ||
      t.includes(`dsuser:${SHORT}`) || t.includes(`:${SHORT}@`) || t.includes(`${encodeURIComponent(LONG_DECODED)}`))
    expect(leaks).toEqual([])
    // The short password is masked in context only: ordinary words keep their "e"s.
    expect(logs.some((l) => /\bengine\b|\bjournal\b|\bretrying\b|\breachable\b|\bfailed\b/.test(l) && l.includes('e'))).toBe(true)
    expect(logs.filter((l) => /\*\*\*[a-z]|[a-z]\*\*\*/.test(l))).toEqual([])
  })
})
