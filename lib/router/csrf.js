'use strict'
/**
 * Cross-site request forgery guard for the admin routes that change state.
 * With cookie/session auth (`router({ auth })`) a page on any site could make
 * the browser post a form to them; a form can only send a *simple* request,
 * so we require a non-simple one and check where it comes from.
 */
const { deny } = require('./auth')

/** Sec-Fetch-Site values a browser sends for requests our own pages make (or typed URLs). */
const OWN_SITES = new Set(['same-origin', 'none'])

function hostsOf (req) {
  const hosts = []
  for (const h of [req.headers.host, req.headers['x-forwarded-host']]) {
    if (typeof h === 'string' && h !== '') hosts.push(...h.split(',').map((x) => x.trim().toLowerCase()))
  }
  return hosts
}

function originHost (origin) {
  try {
    return new URL(origin).host.toLowerCase()
  } catch {
    return null
  }
}

/**
 * Why a state-changing request is refused, or null when it may go ahead.
 * @param {import('http').IncomingMessage} req
 * @returns {string|null}
 */
function csrfProblem (req) {
  const site = req.headers['sec-fetch-site']
  if (typeof site === 'string' && !OWN_SITES.has(site.toLowerCase())) {
    return `cross-site request refused: Sec-Fetch-Site is "${site}" (admin state changes must come from the same origin)`
  }
  const origin = req.headers.origin
  if (typeof origin === 'string') {
    const host = originHost(origin)
    if (host === null || !hostsOf(req).includes(host)) {
      return `cross-origin request refused: Origin ${JSON.stringify(origin)} does not match the Host header`
    }
  }
  // A cross-site form can send neither an Authorization header, nor a JSON
  // content type, nor a custom header without a CORS preflight we never grant.
  const type = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase()
  if (!req.headers.authorization && type !== 'application/json' && !req.headers['x-dualsync-request']) {
    return 'admin state changes need a non-simple request: send Content-Type: application/json ' +
      '(or an Authorization or X-Dualsync-Request header); a plain form post is refused'
  }
  return null
}

/** Express middleware answering 403 (`code: ERR_CSRF`) to a forged state change. */
function csrfGuard (req, res, next) {
  const problem = csrfProblem(req)
  if (problem === null) return next()
  return deny(res, 403, problem, {}, 'ERR_CSRF')
}

module.exports = { csrfGuard, csrfProblem }
