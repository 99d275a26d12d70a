'use strict'
/**
 * Scope and extras policy (shared Atlas databases): which documents of each
 * collection this installation owns, and what a reconcile does with owned
 * documents that only Atlas has. Parsed from options or SYNC_SCOPE /
 * SYNC_EXTRAS_POLICY; every invalid value fails with an error naming the
 * variable and the expected form.
 */
const { EJSON, BSON } = require('bson')
const { serializeBson } = require('./wire')

const DEFAULT_KEY = '*'
const POLICIES = ['report', 'delete']
/** Safe for a shared Atlas database: never delete what may be someone else's. */
const DEFAULT_POLICY = 'report'

const SCOPE_FORM = 'a JSON object of collection name (or "*" for every other collection) → filter, ' +
  'in Extended JSON for ObjectIds and dates, e.g. {"*": {"organization": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}}'
const POLICY_FORM = 'report or delete, or a JSON object of collection name (or "*") → report|delete, ' +
  'e.g. {"*": "report", "sessions": "delete"}'

function isPlainObject (v) {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || v._bsontype) return false
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

/**
 * @param {string} source `SYNC_SCOPE` or `option scope`, for the error
 * @param {unknown} raw the env string or the option value
 * @param {(m: string) => Error} error builds the config error
 * @returns {Record<string, object>} collection (or `*`) → filter object
 */
function parseScope (source, raw, error) {
  let value = raw
  if (typeof raw === 'string') {
    try {
      value = EJSON.parse(raw, { relaxed: true })
    } catch (e) {
      throw error(`Invalid ${source}=${JSON.stringify(raw)}: not valid Extended JSON (${e.message}); expected ${SCOPE_FORM}`)
    }
  }
  if (!isPlainObject(value)) {
    throw error(`Invalid ${source}: expected ${SCOPE_FORM}`)
  }
  const out = {}
  for (const [coll, filter] of Object.entries(value)) {
    if (!isPlainObject(filter)) {
      throw error(`Invalid ${source}: the scope of ${JSON.stringify(coll)} is not an object; expected ${SCOPE_FORM}`)
    }
    if (Object.prototype.hasOwnProperty.call(filter, '_id')) {
      throw error(`Invalid ${source}: the scope of ${JSON.stringify(coll)} filters on _id; expected a filter on the fields that say who owns a document, e.g. {"organization": ...}`)
    }
    out[coll] = filter
  }
  return out
}

/**
 * @param {string} source `SYNC_EXTRAS_POLICY` or `option extrasPolicy`
 * @param {unknown} raw
 * @param {(m: string) => Error} error
 * @returns {Record<string, 'report'|'delete'>} collection (or `*`) → policy
 */
function parsePolicy (source, raw, error) {
  let value = raw
  if (typeof raw === 'string') {
    const word = raw.trim().toLowerCase()
    if (POLICIES.includes(word)) return { [DEFAULT_KEY]: word }
    if (!raw.trim().startsWith('{')) {
      throw error(`Invalid ${source}=${JSON.stringify(raw)}: expected ${POLICY_FORM}`)
    }
    try {
      value = JSON.parse(raw)
    } catch (e) {
      throw error(`Invalid ${source}=${JSON.stringify(raw)}: not valid JSON (${e.message}); expected ${POLICY_FORM}`)
    }
  }
  if (!isPlainObject(value)) throw error(`Invalid ${source}: expected ${POLICY_FORM}`)
  const out = {}
  for (const [coll, p] of Object.entries(value)) {
    const word = typeof p === 'string' ? p.trim().toLowerCase() : p
    if (!POLICIES.includes(word)) {
      throw error(`Invalid ${source}: the policy of ${JSON.stringify(coll)} is ${JSON.stringify(p)}; expected ${POLICY_FORM}`)
    }
    out[coll] = word
  }
  return out
}

/**
 * Resolves the scope and extras policy from options (which win) and env.
 * @param {object} options createSync options (`scope`, `extrasPolicy`)
 * @param {NodeJS.ProcessEnv} env
 * @param {(m: string) => Error} error builds the config error
 * @returns {{scope: Record<string, object>, extrasPolicy: Record<string, string>}}
 */
function loadScope (options, env, error) {
  const pick = (key, envName, parse) => {
    if (options[key] === null) return {}
    if (options[key] !== undefined) return parse(`option ${key}`, options[key], error)
    if (env[envName] !== undefined && env[envName].trim() !== '') return parse(envName, env[envName], error)
    return {}
  }
  const scope = pick('scope', 'SYNC_SCOPE', parseScope)
  const extrasPolicy = pick('extrasPolicy', 'SYNC_EXTRAS_POLICY', parsePolicy)
  if (!extrasPolicy[DEFAULT_KEY]) extrasPolicy[DEFAULT_KEY] = DEFAULT_POLICY
  // Encoded now (with our bson or the app's), so a filter BSON cannot hold fails createSync,
  // and kept as our own bson's values from here on.
  for (const [coll, filter] of Object.entries(scope)) {
    try {
      scope[coll] = BSON.deserialize(serializeBson(filter))
    } catch (e) {
      throw error(`Invalid scope of ${JSON.stringify(coll)}: ${e.message}; expected ${SCOPE_FORM}`)
    }
  }
  return { scope, extrasPolicy }
}

/**
 * The rules the native engine takes: one per collection named in either
 * map, each falling back to `*` for what it does not name, plus `*` itself.
 * @param {{scope: Record<string, object>, extrasPolicy: Record<string, string>}} cfg
 * @returns {{collection: string, filter?: Buffer, extrasPolicy: string}[]}
 */
function nativeScopeRules (cfg) {
  const names = new Set([DEFAULT_KEY, ...Object.keys(cfg.scope), ...Object.keys(cfg.extrasPolicy)])
  return [...names].map((collection) => {
    const filter = cfg.scope[collection] || cfg.scope[DEFAULT_KEY]
    const rule = {
      collection,
      extrasPolicy: cfg.extrasPolicy[collection] || cfg.extrasPolicy[DEFAULT_KEY]
    }
    if (filter) rule.filter = Buffer.from(BSON.serialize(filter))
    return rule
  })
}

/**
 * One log line naming each scope and extras policy, so an operator sees at
 * start what this installation owns and whether reconciles may delete.
 * @param {{scope: Record<string, object>, extrasPolicy: Record<string, string>}} cfg
 * @returns {string}
 */
function describeScope (cfg) {
  const rules = nativeScopeRules(cfg).map((r) => {
    const filter = cfg.scope[r.collection] || cfg.scope[DEFAULT_KEY]
    const shown = filter ? EJSON.stringify(filter, { relaxed: true }) : 'every document'
    return `${r.collection}: scope ${shown}, extras ${r.extrasPolicy}`
  })
  return `Sync scope and extras policy (SYNC_SCOPE, SYNC_EXTRAS_POLICY): ${rules.join('; ')}`
}

module.exports = { loadScope, nativeScopeRules, describeScope, DEFAULT_POLICY, POLICIES, DEFAULT_KEY }
