'use strict'
/**
 * Admin authentication for the router: a bearer token compared in constant
 * time, or the app's own middleware. Never open by default.
 */
const crypto = require('node:crypto')

const REALM = 'dualsync'

const digest = (s) => crypto.createHash('sha256').update(String(s), 'utf8').digest()

/**
 * Constant-time string comparison: hashing first makes both sides the same
 * length, so neither the content nor the length of the token leaks.
 * @param {string} given
 * @param {string} expected
 * @returns {boolean}
 */
function tokenMatches (given, expected) {
  return crypto.timingSafeEqual(digest(given), digest(expected))
}

/** Bearer token from the Authorization header; null when absent or of another scheme (that is 401, not 403). */
function bearerFrom (req) {
  const h = req.headers.authorization
  if (typeof h !== 'string') return null
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(h)
  return m ? m[1] : null
}

/** Answers a refused request: JSON `{error, code?}`, never cached. */
function deny (res, status, message, extraHeaders = {}, code) {
  for (const [k, v] of Object.entries(extraHeaders)) res.set(k, v)
  res.set('Cache-Control', 'no-store')
  res.status(status).json(code ? { error: message, code } : { error: message })
}

/**
 * Builds the guard placed in front of every admin route. The token is only
 * ever read from the Authorization header: a token in a URL lands in access
 * logs and proxies (the dashboard page reads it from the #fragment instead).
 * @param {{token?: string, auth?: Function}} opts token: expected bearer token; auth: app middleware (wins when given)
 * @returns {{guard: Function, mode: 'middleware'|'token'|'unconfigured'}}
 */
function createAuth ({ token, auth }) {
  if (typeof auth === 'function') return { mode: 'middleware', guard: auth }
  if (typeof token !== 'string' || token === '') {
    const refuse = (req, res) => deny(res, 403,
      'dualsync admin routes are disabled because no credentials are configured: set SYNC_ADMIN_TOKEN ' +
      '(or createRouter(sync, { token })) and send "Authorization: Bearer <token>", ' +
      'or pass createRouter(sync, { auth: yourMiddleware }) to use your app\'s own authentication')
    return { mode: 'unconfigured', guard: refuse }
  }
  const guard = function dualsyncAuth (req, res, next) {
    const given = bearerFrom(req)
    if (given === null) {
      return deny(res, 401, 'authentication required: send "Authorization: Bearer <SYNC_ADMIN_TOKEN>"',
        { 'WWW-Authenticate': `Bearer realm="${REALM}"` })
    }
    if (!tokenMatches(given, token)) {
      return deny(res, 403, 'invalid admin token',
        { 'WWW-Authenticate': `Bearer realm="${REALM}", error="invalid_token"` })
    }
    next()
  }
  return { mode: 'token', guard }
}

module.exports = { createAuth, tokenMatches, deny }
