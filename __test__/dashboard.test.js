// The dashboard in a real headless Chromium, served by a real Express app
// (router mounted at /admin) over a real engine: it must authenticate with
// #token= (a fragment, never sent to the server) and then hide it, show numbers that move while writes flow, drive
// pause/resume, full sync and dead-letter retry, load nothing from elsewhere,
// and raise no script or CSP errors. Leaves a screenshot in __test__/artifacts/.
//
// Needs Chromium at /usr/bin/chromium (Debian package `chromium`) or CHROMIUM_PATH.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { openAdminSync } from './helpers/adminsync.js'

const require = createRequire(import.meta.url)
const express = require('express')
const { chromium } = require('playwright-core')
const { createRouter } = require('../lib/router.js')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')

const HAS_JOBS = typeof require('../lib/sync.js').Sync.prototype.fullSync === 'function'
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts')
const TOKEN = 'secret-token'
const { secrets } = require('./helpers/admin.js')

let servers, dbName, local, atlas, sync, server, base, browser, page
const problems = [] // console errors, page errors, foreign requests
const apiCalls = []
const requestedUrls = [] // every URL the server received, as it would appear in an access log

async function insertAndEnqueue (coll, docs) {
  const res = await local.db(dbName).collection(coll).insertMany(docs)
  sync.enqueue(Object.values(res.insertedIds).map((id) => ({ collection: coll, id })))
}

/** Integer shown in an element (thousands separators removed). */
async function shown (sel) {
  const t = await page.textContent(sel)
  const digits = t.replace(/[^\d]/g, '')
  if (digits === '') throw new Error(`${sel} shows no number: ${JSON.stringify(t)}`)
  return Number(digits)
}

/** Waits until the element's integer satisfies `op` against `n`. */
function waitNumber (sel, op, n, timeout = 30_000) {
  return page.waitForFunction(([s, o, v]) => {
    const el = document.querySelector(s)
    const d = el && el.textContent.replace(/[^\d]/g, '')
    if (!d) return false
    const x = Number(d)
    return o === '>=' ? x >= v : o === '==' ? x === v : x > v
  }, [sel, op, n], { timeout, polling: 100 })
}

function waitText (sel, re, timeout = 30_000) {
  return page.waitForFunction(([s, src]) => {
    const el = document.querySelector(s)
    return !!el && new RegExp(src).test(el.textContent)
  }, [sel, re.source], { timeout, polling: 100 })
}

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: install the Debian package "chromium" (apt-get install -y chromium) or set CHROMIUM_PATH`)
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  ;({ servers, dbName, local, atlas, sync } = await openAdminSync('dash', TOKEN, {
    logLevel: 'warn',
    logger: { warn () {}, error () {}, info () {}, debug () {} }
  }))
  const app = express()
  app.use((req, res, next) => { requestedUrls.push(req.originalUrl); next() })
  app.get('/', (req, res) => res.send('the app'))
  app.use('/admin', createRouter(sync))
  await new Promise((resolve) => {
    server = app.listen(0, '127.0.0.1', resolve)
  })
  base = `http://127.0.0.1:${server.address().port}`
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, locale: 'en-US' })
  page = await context.newPage()
  page.on('console', (msg) => { if (msg.type() === 'error') problems.push(`console: ${msg.text()}`) })
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`))
  page.on('request', (req) => {
    const url = new URL(req.url())
    if (url.origin !== base) problems.push(`foreign request: ${req.url()}`)
    if (url.pathname.startsWith('/admin/') && url.pathname !== '/admin/dashboard') {
      apiCalls.push({ path: url.pathname, auth: req.headers().authorization })
    }
  })
})

afterAll(async () => {
  await browser?.close()
  await new Promise((resolve) => (server ? server.close(resolve) : resolve()))
  await sync?.close({ drainTimeoutMs: 0 })
  await local?.close()
  await atlas?.close()
})

describe('dashboard', () => {
  it('shows no data without the token, and refuses a token in the query string', async () => {
    const other = await browser.newPage()
    try {
      const res = await other.goto(`${base}/admin/dashboard`)
      expect(res.status()).toBe(200) // static page: its data needs the token
      await other.waitForFunction(() => /not authorized|authentication required/.test(document.body.textContent), null, { timeout: 30_000 })
      await other.goto('about:blank') // else a fragment change is a same-document navigation
      const wrong = await other.goto(`${base}/admin/dashboard#token=wrong`)
      expect(wrong.status()).toBe(200)
      await other.waitForFunction(() => /invalid admin token/.test(document.body.textContent), null, { timeout: 30_000 })
      const inQuery = await other.goto(`${base}/admin/dashboard?token=${TOKEN}`)
      expect(inQuery.status()).toBe(400)
      expect(await inQuery.text()).toMatch(/#token=/)
    } finally {
      await other.close()
    }
  })

  it('loads with #token=, never sends it in a URL, removes it from the address bar and authenticates its own requests', async () => {
    requestedUrls.length = 0 // the test before sent ?token= on purpose
    const res = await page.goto(`${base}/admin/dashboard#token=${TOKEN}`)
    expect(res.status()).toBe(200)
    expect(requestedUrls.length).toBeGreaterThan(0)
    expect(requestedUrls.filter((u) => u.includes(TOKEN))).toEqual([])
    await waitText('#health-status', /^(healthy|degraded)$/)
    expect(page.url()).toBe(`${base}/admin/dashboard`)
    await waitText('#sync-state', /^running$/)
    expect(apiCalls.some((c) => c.path === '/admin/metrics')).toBe(true)
    expect(apiCalls.some((c) => c.path === '/admin/health')).toBe(true)
    expect(apiCalls.every((c) => c.auth === `Bearer ${TOKEN}`)).toBe(true)
    await waitText('#atlas-state', /^connected$/)
  })

  it('shows numbers that move while writes flow', async () => {
    await waitText('#applied-total', /\d/)
    const applied0 = await shown('#applied-total')
    const enq0 = await shown('#enqueued-total')
    await insertAndEnqueue('orders', Array.from({ length: 60 }, (_, i) => ({ i, total: i * 3 })))
    await waitNumber('#enqueued-total', '>=', enq0 + 60)
    await waitNumber('#applied-total', '>=', applied0 + 60)
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)
    await waitNumber('#applied-total', '==', sync.metrics().applied.total)
    await waitNumber('#backlog-total', '==', 0)
    await waitText('#collections tbody', new RegExp(`${dbName}\\.orders`))
    await waitText('#lag-p50', /\d+ (ms|s)/)
  })

  it('pauses and resumes with its buttons', async () => {
    await page.click('#btn-pause')
    await waitText('#sync-state', /^paused$/)
    expect(sync.metrics().state).toBe('paused')
    await waitText('#health-reasons', /sync is paused/)
    const applied = sync.metrics().applied.total
    await insertAndEnqueue('orders', Array.from({ length: 30 }, (_, i) => ({ late: i })))
    await waitNumber('#backlog-total', '>=', 30)
    expect(await sync.flush({ timeoutMs: 1000 })).toBe(false)
    expect(await shown('#applied-total')).toBe(applied)
    expect(await page.isDisabled('#btn-pause')).toBe(true)

    await page.click('#btn-resume')
    await waitText('#sync-state', /^running$/)
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)
    await waitNumber('#applied-total', '>=', applied + 30)
    await waitNumber('#backlog-total', '==', 0)
    assertConverged(await compareDatabases(local, atlas, dbName, ['orders']))
  })

  it('lists a dead letter and retries it with its button', async () => {
    await atlas.db(dbName).collection('users').createIndex({ email: 1 }, { unique: true, name: 'email_unique' })
    await insertAndEnqueue('users', [{ email: 'same@example.com', n: 1 }])
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)
    await insertAndEnqueue('users', [{ email: 'same@example.com', n: 2 }])
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)
    await waitNumber('#dead-letters-count', '==', 1)
    await waitText('#dead-letters-list tbody', new RegExp(`${dbName}\\.users.*11000`))
    await waitText('#health-status', /^degraded$/)

    await atlas.db(dbName).collection('users').dropIndex('email_unique')
    await page.click('#btn-retry-dead')
    await waitText('#message', /1 dead letter\(s\) re-queued/)
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)
    await waitNumber('#dead-letters-count', '==', 0)
    assertConverged(await compareDatabases(local, atlas, dbName, ['users']))
  })

  it.skipIf(!HAS_JOBS)('runs a full sync and a verify from its buttons and shows their progress', async () => {
    // Only local: a full sync must find and repair these.
    await local.db(dbName).collection('legacy').insertMany(Array.from({ length: 500 }, (_, i) => ({ i })))
    await page.click('#btn-full')
    await waitText('#job-kind', /^Full sync /)
    await waitText('#job-state', /^done$/, 120_000)
    const progress = await page.$eval('#job-progress', (p) => [p.value, p.max])
    expect(progress[0]).toBe(progress[1])
    await waitText('#job-reports tbody', /legacy/)
    // Each report row names its extras policy and scope; the scope panel lists the rules.
    await waitText('#job-reports tbody', /legacy500050000delete0 \/ 0every document/)
    await waitText('#scope-rules tbody', /^\* \(every other collection\)every documentdelete$/)
    expect(await sync.flush({ timeoutMs: 60_000 })).toBe(true)
    assertConverged(await compareDatabases(local, atlas, dbName, ['legacy', 'orders', 'users']))

    await page.click('#btn-verify')
    await waitText('#job-kind', /^Verify /)
    await waitText('#job-state', /^done$/, 120_000)
    await waitNumber('#job-differences', '==', 0)
  })

  it('looks complete, with no script errors and nothing loaded from elsewhere', async () => {
    await insertAndEnqueue('orders', Array.from({ length: 10 }, (_, i) => ({ shot: i })))
    await waitText('#updated-at', /\d/)
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true })
    expect(fs.statSync(path.join(ARTIFACTS, 'dashboard.png')).size).toBeGreaterThan(10_000)
    for (const id of ['#backlog-total', '#applied-total', '#atlas-state', '#health-status', '#btn-pause', '#btn-resume', '#btn-full', '#btn-verify', '#job-progress']) {
      expect(await page.isVisible(id), id).toBe(true)
    }
    expect(problems).toEqual([])
    const html = await page.content()
    expect(html).not.toContain(TOKEN)
    for (const secret of secrets()) expect(html).not.toContain(secret)
  })
})
