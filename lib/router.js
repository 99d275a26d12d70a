'use strict'
/**
 * Express admin router for a Sync: metrics (JSON and Prometheus), health,
 * full sync / verify jobs, pause/resume, dead letters and a dashboard page.
 *
 * Mount it under a path of your choice: `app.use('/admin/sync', createRouter(sync))`.
 * Works with Express 4 and 5. Every route needs credentials (see createRouter)
 * except `GET /live` (liveness: tells nothing), the dashboard page's static
 * HTML in token mode, and `GET /health/public` when opened.
 */
const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const { scrub } = require('./redact')
const { toPrometheus, snapshotOf, CONTENT_TYPE } = require('./prometheus')
const { createAuth } = require('./router/auth')
const { csrfGuard } = require('./router/csrf')
const { BadRequest, deadLetterFilter, fullSyncOptions, verifyOptions, positiveInt } = require('./router/params')

const DASHBOARD_FILE = path.join(__dirname, 'dashboard.html')
const MAX_DEAD_LETTERS_LISTED = 100_000

/** The app's own express (so the router matches its version), else ours. */
function loadExpress () {
  let resolved = null
  try {
    resolved = require.resolve('express', { paths: [process.cwd()] })
  } catch { /* the app has no express of its own next to its cwd */ }
  return require(resolved || 'express')
}

/** HTTP status of a health status: only an unusable engine fails a load-balancer check. */
function healthHttpStatus (status) {
  return status === 'unhealthy' || status === 'closed' ? 503 : 200
}

class HttpError extends Error {
  constructor (status, message) {
    super(message)
    this.status = status
  }
}

/**
 * Creates the admin router.
 *
 * Authentication (never open by default):
 * - `options.auth`: your app's own middleware `(req, res, next)`; when given it
 *   alone decides (the token is not checked).
 * - otherwise a bearer token, `options.token ?? sync.config.adminToken`
 *   (SYNC_ADMIN_TOKEN), compared in constant time: no `Authorization: Bearer`
 *   → 401 with `WWW-Authenticate: Bearer`, a wrong token → 403.
 * - neither configured → every route answers 403 explaining how to configure one.
 *
 * The dashboard: open `…/dashboard#token=<token>`. The fragment never leaves
 * the browser (no access log, proxy or Referer sees it); the page keeps the
 * token in sessionStorage, removes it from the address bar and sends it as
 * `Authorization: Bearer` on its own requests. In token mode the page itself
 * is static HTML served without credentials (it holds no data); a `?token=`
 * in the URL is refused with 400 (`ERR_TOKEN_IN_URL`). With `options.auth`
 * (e.g. a session cookie) the page sits behind that middleware.
 *
 * CSRF: the routes that change state (`POST /pause`, `/resume`, `/full`,
 * `/dead-letters/retry`, `DELETE /full/:id`) also need a non-simple request
 * (`Content-Type: application/json`, or an `Authorization` or
 * `X-Dualsync-Request` header) whose `Origin`/`Sec-Fetch-Site`, when sent,
 * is our own: else 403 `ERR_CSRF`.
 *
 * Liveness vs sync status: `GET /live` answers 200 whenever the process
 * answers, whatever Atlas does (wire container/load-balancer checks here).
 * `GET /health` is the sync status: 200 for healthy and degraded, 503 for
 * unhealthy (Atlas unreachable past SYNC_HEALTH_ATLAS_DOWN_MS) or a closed
 * engine: for monitoring and alerts, never for taking the app out of service.
 * `options.publicHealth: true` adds `GET /health/public` without
 * authentication, answering only `{status}` with the same codes.
 *
 * @param {object} sync the object createSync() returned
 * @param {{token?: string, auth?: Function, publicHealth?: boolean, express?: Function}} [options]
 *   express: the express module to build the router with (default: the app's, resolved from process.cwd())
 * @returns {import('express').Router}
 */
function createRouter (sync, options = {}) {
  if (!sync || typeof sync.metrics !== 'function' || typeof sync.health !== 'function') {
    throw new TypeError('createRouter(sync, options): sync must be the object createSync() returned')
  }
  if (options === null || typeof options !== 'object') {
    throw new TypeError('createRouter(sync, options): options must be an object')
  }
  const known = ['token', 'auth', 'publicHealth', 'express']
  const unknown = Object.keys(options).filter((k) => !known.includes(k))
  if (unknown.length) throw new TypeError(`createRouter: unknown option(s) ${unknown.join(', ')} (known: ${known.join(', ')})`)
  if (options.auth !== undefined && typeof options.auth !== 'function') {
    throw new TypeError('createRouter: options.auth must be a middleware function (req, res, next)')
  }
  if (options.token !== undefined && (typeof options.token !== 'string' || options.token === '')) {
    throw new TypeError('createRouter: options.token must be a non-empty string')
  }
  const express = options.express || loadExpress()
  if (typeof express.Router !== 'function' || typeof express.json !== 'function') {
    throw new TypeError('createRouter: options.express must be the express module (Express 4.16+ or 5)')
  }

  const cfg = sync.config || {}
  const secrets = [cfg.localUri, cfg.atlasUri].filter(Boolean)
  const { guard: auth, mode } = createAuth({ token: options.token ?? cfg.adminToken, auth: options.auth })
  // State changes: authenticated first (401/403 as usual), then not forged.
  const change = [auth, csrfGuard]
  const json = express.json({ limit: '64kb' })
  const router = express.Router()
  const dashboardHtml = fs.readFileSync(DASHBOARD_FILE, 'utf8')

  /** Deep copy with every string scrubbed of credentials. */
  const clean = (v) => {
    if (typeof v === 'string') return scrub(v, secrets)
    if (Array.isArray(v)) return v.map(clean)
    if (v && typeof v === 'object') {
      const out = {}
      for (const [k, x] of Object.entries(v)) out[k] = clean(x)
      return out
    }
    return v
  }
  const send = (res, status, body) => {
    res.set('Cache-Control', 'no-store')
    res.status(status).json(clean(body))
  }
  // Express 4 does not catch rejected promises of handlers.
  const wrap = (fn) => (req, res, next) => {
    Promise.resolve().then(() => fn(req, res, next)).catch(next)
  }
  const need = (name) => {
    if (sync.enabled === false) throw new HttpError(409, `sync is disabled (SYNC_ENABLED=false): ${name} is unavailable`)
    if (typeof sync[name] !== 'function') throw new HttpError(501, `this dualsync version has no ${name}()`)
  }
  // The engine reports invalid arguments as TypeError: that is the caller's mistake (400).
  const call = (name, ...args) => {
    try {
      return sync[name](...args)
    } catch (e) {
      if (e instanceof TypeError) throw new BadRequest(e.message)
      throw e
    }
  }
  const snapshotOfJob = (job) => (job && typeof job.snapshot === 'function' ? job.snapshot() : job)
  const findJob = (id) => {
    need('job')
    const job = sync.job(id)
    if (!job) throw new HttpError(404, `no full sync or verify job with id ${JSON.stringify(id)}`)
    return job
  }
  const healthNow = () => {
    try {
      return sync.health()
    } catch (e) {
      if (e && e.code === 'ERR_SYNC_CLOSED') {
        return { status: 'unhealthy', reasons: ['sync engine is closed'], checkedAt: new Date().toISOString() }
      }
      throw e
    }
  }

  // Liveness: the app process answers. Never fails for an Atlas outage or a
  // sync problem, so it is safe for load balancers and container restarts.
  router.get('/live', (req, res) => send(res, 200, { status: 'alive' }))

  if (options.publicHealth === true) {
    router.get('/health/public', wrap((req, res) => {
      const { status } = healthNow()
      send(res, healthHttpStatus(status), { status })
    }))
  }

  router.get('/health', auth, wrap((req, res) => {
    const h = healthNow()
    send(res, healthHttpStatus(h.status), h)
  }))

  router.get('/metrics', auth, wrap((req, res) => {
    const m = snapshotOf(sync)
    if (m === null) return send(res, 503, { error: 'the sync engine is closed', state: 'closed' })
    send(res, 200, m)
  }))

  router.get('/metrics/prometheus', auth, wrap((req, res) => {
    const text = toPrometheus(snapshotOf(sync))
    res.set('Cache-Control', 'no-store')
    res.set('Content-Type', CONTENT_TYPE)
    // A Buffer: Express 4 would otherwise rewrite the charset parameter of the content type.
    res.status(200).send(Buffer.from(scrub(text, secrets), 'utf8'))
  }))

  router.post('/pause', change, wrap((req, res) => {
    sync.pause()
    send(res, 200, { state: stateOf(sync) })
  }))

  router.post('/resume', change, wrap((req, res) => {
    sync.resume()
    send(res, 200, { state: stateOf(sync) })
  }))

  router.post('/full', change, json, wrap((req, res) => {
    need('fullSync')
    const job = call('fullSync', fullSyncOptions(req.body))
    const snap = snapshotOfJob(job)
    send(res, 202, { jobId: snap.id, job: snap })
  }))

  router.get('/full/:id', auth, wrap((req, res) => {
    const snap = snapshotOfJob(findJob(req.params.id))
    send(res, 200, { jobId: snap.id, job: snap })
  }))

  router.delete('/full/:id', change, wrap(async (req, res) => {
    const job = findJob(req.params.id)
    await job.cancel()
    const snap = snapshotOfJob(job)
    send(res, 200, { jobId: snap.id, job: snap })
  }))

  router.get('/verify', auth, wrap(async (req, res) => {
    need('verify')
    const { opts, wait, timeoutMs } = verifyOptions(req.query)
    const job = call('verify', opts)
    if (wait && job && job.done && typeof job.done.then === 'function') {
      let timer
      const timedOut = new Promise((resolve) => { timer = setTimeout(resolve, timeoutMs, null) })
      const report = await Promise.race([job.done, timedOut]).finally(() => clearTimeout(timer))
      if (report) return send(res, 200, { jobId: report.id, job: report })
    }
    const snap = snapshotOfJob(job)
    send(res, 202, { jobId: snap.id, job: snap })
  }))

  router.get('/dead-letters', auth, wrap((req, res) => {
    const filter = deadLetterFilter(req.query, 'query of GET /dead-letters')
    const limit = positiveInt(req.query.limit, 1000, MAX_DEAD_LETTERS_LISTED, 'limit')
    const all = call('deadLetters', filter)
    send(res, 200, { total: all.length, deadLetters: all.slice(0, limit) })
  }))

  router.post('/dead-letters/retry', change, json, wrap((req, res) => {
    const requeued = call('retryDeadLetters', deadLetterFilter(req.body, 'POST /dead-letters/retry body'))
    send(res, 200, { requeued })
  }))

  // Token mode: the page is static (its data comes through authenticated
  // fetches), so it needs no credential and the token never travels in a URL.
  const dashboardGuard = mode === 'token' ? refuseTokenInUrl : auth
  router.get('/dashboard', dashboardGuard, (req, res) => {
    const nonce = crypto.randomBytes(16).toString('base64')
    res.set({
      'Content-Type': 'text/html; charset=utf-8',
      'Cache-Control': 'no-store',
      'Referrer-Policy': 'no-referrer',
      'X-Content-Type-Options': 'nosniff',
      'X-Frame-Options': 'DENY',
      'Content-Security-Policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; ` +
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    })
    res.status(200).send(Buffer.from(dashboardHtml.replace(/__CSP_NONCE__/g, nonce), 'utf8'))
  })

  // Errors of our routes only: JSON, credentials scrubbed; 5xx are logged.
  router.use((err, req, res, next) => {
    if (res.headersSent) return next(err)
    let status = Number(err && (err.status || err.statusCode)) || 500
    let message = err && err.message ? err.message : String(err)
    if (err && err.type === 'entity.parse.failed') message = `invalid JSON body: ${message}`
    else if (err && err.code === 'ERR_SYNC_CLOSED') status = 503
    if (status < 400 || status > 599) status = 500
    if (status >= 500 && sync.logger && typeof sync.logger.error === 'function') {
      sync.logger.error(`admin ${req.method} ${req.baseUrl || ''}${req.path} failed: ${message}`)
    }
    send(res, status, { error: message })
  })

  return router
}

/** A token in the query string has already reached logs; say how to open the page instead. */
function refuseTokenInUrl (req, res, next) {
  if (req.query && req.query.token !== undefined) {
    res.set('Cache-Control', 'no-store')
    return res.status(400).json({
      code: 'ERR_TOKEN_IN_URL',
      error: 'the admin token must not be sent in the URL (it lands in access logs): open …/dashboard#token=<SYNC_ADMIN_TOKEN> ' +
        'instead (the #fragment never leaves the browser), and rotate SYNC_ADMIN_TOKEN if this URL was shared'
    })
  }
  next()
}

function stateOf (sync) {
  const m = snapshotOf(sync)
  return m ? m.state : 'closed'
}

module.exports = { createRouter, healthHttpStatus }
