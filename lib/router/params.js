'use strict'
/** Validation of query strings and JSON bodies of the admin routes: bad input → 400 naming the field. */

class BadRequest extends Error {
  constructor (message) {
    super(message)
    this.status = 400
  }
}

const INT32_MIN = -2147483648
const INT32_MAX = 2147483647

function isPlainObject (v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function rejectUnknown (obj, allowed, where) {
  const unknown = Object.keys(obj).filter((k) => !allowed.includes(k))
  if (unknown.length) {
    throw new BadRequest(`${where}: unknown field(s) ${unknown.map((k) => JSON.stringify(k)).join(', ')}; allowed: ${allowed.join(', ')}`)
  }
}

function parseCode (raw, where) {
  const n = typeof raw === 'number' ? raw : (typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN)
  if (!Number.isInteger(n) || n < INT32_MIN || n > INT32_MAX) {
    throw new BadRequest(`${where}: code must be an integer error code (got ${JSON.stringify(raw)})`)
  }
  return n
}

function parseCollectionName (raw, where) {
  if (typeof raw !== 'string' || raw === '' || raw.includes('\0')) {
    throw new BadRequest(`${where}: collection must be a non-empty string (got ${JSON.stringify(raw)})`)
  }
  return raw
}

/**
 * Dead-letter filter from a query string or a JSON body.
 * @param {object|undefined} src
 * @param {string} where what to name in errors
 * @returns {{collection?: string, code?: number}|undefined}
 */
function deadLetterFilter (src, where) {
  if (src === undefined || src === null) return undefined
  if (!isPlainObject(src)) throw new BadRequest(`${where}: expected an object {collection?, code?}`)
  const allowed = where.startsWith('query') ? ['collection', 'code', 'limit'] : ['collection', 'code']
  rejectUnknown(src, allowed, where)
  const f = {}
  if (src.collection !== undefined && src.collection !== '') f.collection = parseCollectionName(src.collection, where)
  if (src.code !== undefined && src.code !== '') f.code = parseCode(src.code, where)
  return Object.keys(f).length ? f : undefined
}

/** Positive integer from a query parameter, or the default. */
function positiveInt (raw, dflt, max, name) {
  if (raw === undefined || raw === '') return dflt
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new BadRequest(`query ${name} must be an integer from 1 to ${max} (got ${JSON.stringify(raw)})`)
  }
  return n
}

/** true/false/1/0 from a query parameter. */
function queryBool (raw, name) {
  if (raw === undefined || raw === '') return false
  const s = String(raw).toLowerCase()
  if (s === 'true' || s === '1') return true
  if (s === 'false' || s === '0') return false
  throw new BadRequest(`query ${name} must be true or false (got ${JSON.stringify(raw)})`)
}

function collectionList (raw, where) {
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new BadRequest(`${where}: collections must be a non-empty array of collection names (got ${JSON.stringify(raw)})`)
  }
  return raw.map((c) => parseCollectionName(c, where))
}

/**
 * Options of POST /full.
 * @param {any} body
 * @returns {{collections?: string[], dryRun?: boolean}}
 */
function fullSyncOptions (body) {
  const where = 'POST /full body'
  if (body === undefined || body === null) return {}
  if (!isPlainObject(body)) throw new BadRequest(`${where}: expected a JSON object {collections?, dryRun?}`)
  rejectUnknown(body, ['collections', 'dryRun'], where)
  const opts = {}
  if (body.collections !== undefined) opts.collections = collectionList(body.collections, where)
  if (body.dryRun !== undefined) {
    if (typeof body.dryRun !== 'boolean') throw new BadRequest(`${where}: dryRun must be true or false (got ${JSON.stringify(body.dryRun)})`)
    opts.dryRun = body.dryRun
  }
  return opts
}

/**
 * Options of GET /verify from its query: collections=a,b (or repeated), wait, timeoutMs.
 * @param {object} query
 */
function verifyOptions (query) {
  rejectUnknown(query, ['collections', 'wait', 'timeoutMs'], 'query of GET /verify')
  const opts = {}
  if (query.collections !== undefined && query.collections !== '') {
    const raw = Array.isArray(query.collections) ? query.collections : String(query.collections).split(',')
    opts.collections = collectionList(raw.map((s) => String(s).trim()).filter(Boolean), 'query of GET /verify')
  }
  return {
    opts,
    wait: queryBool(query.wait, 'wait'),
    timeoutMs: positiveInt(query.timeoutMs, 10 * 60_000, 24 * 3600_000, 'timeoutMs')
  }
}

module.exports = { BadRequest, deadLetterFilter, fullSyncOptions, verifyOptions, positiveInt }
