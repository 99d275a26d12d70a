'use strict'
/**
 * Configuration: environment variables (names from the deployment guide the
 * users already follow) overridden by options passed to createSync().
 * Every invalid value fails with an error naming the variable, the value
 * and the expected form.
 */
const path = require('node:path')
const { redactUri } = require('./redact')
const { loadScope } = require('./scope')

class ConfigError extends Error {
  constructor (message) {
    super(message)
    this.name = 'ConfigError'
    this.code = 'ERR_SYNC_CONFIG'
  }
}

const bool = { kind: 'boolean', expected: 'true or false' }
const int = (min, max) => ({ kind: 'int', min, max, expected: `an integer from ${min} to ${max}` })
const num = (min, max) => ({ kind: 'number', min, max, expected: `a number from ${min} to ${max}` })
const str = { kind: 'string', expected: 'a string' }
const list = { kind: 'list', expected: 'a comma-separated list of collection names' }
const uri = { kind: 'uri', expected: 'a mongodb:// or mongodb+srv:// URI' }
const level = { kind: 'enum', values: ['debug', 'info', 'warn', 'error'], expected: 'one of debug, info, warn, error' }

/**
 * Added to SYNC_SHUTDOWN_DRAIN_MS for the default SYNC_LOCK_WAIT_MS: a closing
 * engine abandons tasks stuck on Atlas after 1.5 s and stops its runtime within
 * 2 s; PM2's default kill_timeout (1.6 s) SIGKILLs a slower one, which releases
 * the lock at once. 10 s covers those with room for a loaded machine.
 */
const LOCK_WAIT_EXTRA_MS = 10000

/** option name → [env var, type, default] */
const FIELDS = {
  enabled: ['SYNC_ENABLED', bool, false],
  localUri: ['MONGODB_LOCAL_URI', uri, undefined],
  atlasUri: ['MONGODB_ATLAS_URI', uri, undefined],
  queueMaxSize: ['SYNC_QUEUE_MAX_SIZE', int(1, 10_000_000), 10000],
  workerInterval: ['SYNC_WORKER_INTERVAL', int(0, 3_600_000), 100],
  maxRetries: ['SYNC_MAX_RETRIES', int(0, 1000), 5],
  persistQueue: ['SYNC_PERSIST_QUEUE', bool, true],
  batchSize: ['SYNC_BATCH_SIZE', int(1, 100_000), 100],
  excludedCollections: ['SYNC_EXCLUDED_COLLECTIONS', list, []],
  dataDir: ['SYNC_DATA_DIR', str, undefined],
  fsyncIntervalMs: ['SYNC_FSYNC_INTERVAL_MS', int(0, 3_600_000), 1000],
  concurrency: ['SYNC_CONCURRENCY', int(1, 64), 4],
  logLevel: ['SYNC_LOG_LEVEL', level, 'info'],
  adminToken: ['SYNC_ADMIN_TOKEN', str, undefined],
  fullSyncCron: ['SYNC_FULL_SYNC_CRON', str, undefined],
  fullSyncOnStart: ['SYNC_FULL_SYNC_ON_START', bool, false],
  queryMarkCap: ['SYNC_QUERY_MARK_CAP', int(1, 10_000_000), 10000],
  queryMarkTimeoutMs: ['SYNC_QUERY_MARK_TIMEOUT_MS', int(1, 3_600_000), 5000],
  connectTimeoutMs: ['SYNC_CONNECT_TIMEOUT_MS', int(100, 600_000), 10000],
  backoffMinMs: ['SYNC_BACKOFF_MIN_MS', int(1, 600_000), 100],
  backoffMaxMs: ['SYNC_BACKOFF_MAX_MS', int(1, 3_600_000), 30000],
  shutdownDrainMs: ['SYNC_SHUTDOWN_DRAIN_MS', int(0, 3_600_000), 5000],
  // Default: the previous holder's drain plus LOCK_WAIT_EXTRA_MS (see below).
  lockWaitMs: ['SYNC_LOCK_WAIT_MS', int(0, 3_600_000), undefined],
  adoptIntervalMs: ['SYNC_ADOPT_INTERVAL_MS', int(0, 86_400_000), 30000],
  // Default: on when this process is one of several instances (NODE_APP_INSTANCE set).
  verifyAfterAck: ['SYNC_VERIFY_AFTER_ACK', bool, undefined],
  localReadLimit: ['SYNC_LOCAL_READ_LIMIT', int(1, 1024), 32],
  localReadAdaptive: ['SYNC_LOCAL_READ_ADAPTIVE', bool, true],
  drainShare: ['SYNC_DRAIN_SHARE', num(0.01, 1), 0.03],
  captureRing: ['SYNC_CAPTURE_RING', bool, true],
  healthMaxBacklog: ['SYNC_HEALTH_MAX_BACKLOG', int(0, 1e12), 1000],
  healthMaxFailureRate: ['SYNC_HEALTH_MAX_FAILURE_RATE', num(0, 1), 0.05],
  healthMaxLagMs: ['SYNC_HEALTH_MAX_LAG_MS', int(0, 1e12), 60000],
  healthMaxDeadLetters: ['SYNC_HEALTH_MAX_DEAD_LETTERS', int(0, 1e12), 0],
  healthAtlasDownMs: ['SYNC_HEALTH_ATLAS_DOWN_MS', int(0, 1e12), 300000]
}

function fail (source, raw, type) {
  const shown = JSON.stringify(type.kind === 'uri' ? redactUri(String(raw)) : raw)
  return new ConfigError(`Invalid ${source}=${shown}: expected ${type.expected}`)
}

function parseValue (source, raw, type, fromEnv) {
  switch (type.kind) {
    case 'boolean': {
      if (typeof raw === 'boolean') return raw
      const s = String(raw).trim().toLowerCase()
      if (['true', '1', 'yes', 'on'].includes(s)) return true
      if (['false', '0', 'no', 'off'].includes(s)) return false
      throw fail(source, raw, type)
    }
    case 'int':
    case 'number': {
      const s = typeof raw === 'number' ? raw : String(raw).trim()
      const n = typeof s === 'number' ? s : (s === '' ? NaN : Number(s))
      if (!Number.isFinite(n) || (type.kind === 'int' && !Number.isInteger(n)) || n < type.min || n > type.max) {
        throw fail(source, raw, type)
      }
      return n
    }
    case 'list': {
      const items = Array.isArray(raw) ? raw : String(raw).split(',')
      const out = items.map((x) => String(x).trim()).filter(Boolean)
      if (out.some((c) => c.includes('\0') || c.startsWith('$'))) throw fail(source, raw, type)
      return out
    }
    case 'uri': {
      const s = String(raw).trim()
      if (!/^mongodb(\+srv)?:\/\/[^/?]+/.test(s)) throw fail(source, raw, type)
      return s
    }
    case 'enum': {
      const s = String(raw).trim().toLowerCase()
      if (!type.values.includes(s)) throw fail(source, raw, type)
      return s
    }
    default: {
      if (typeof raw !== 'string' || (fromEnv && raw.trim() === '')) throw fail(source, raw, type)
      return raw.trim()
    }
  }
}

/** Database name in a MongoDB URI path, or undefined. */
function dbFromUri (u) {
  const m = /^mongodb(?:\+srv)?:\/\/[^/]+\/([^?]*)/.exec(u || '')
  return m && m[1] ? decodeURIComponent(m[1]) : undefined
}

/**
 * Resolves the effective configuration.
 * @param {object} [options] createSync options (camelCase); they win over env.
 * @param {NodeJS.ProcessEnv} [env]
 * @returns {object} frozen config
 */
function loadConfig (options = {}, env = process.env) {
  if (options === null || typeof options !== 'object') {
    throw new ConfigError('createSync(options): options must be an object')
  }
  const cfg = {}
  for (const [key, [envName, type, dflt]] of Object.entries(FIELDS)) {
    if (options[key] === null) {
      // null: explicitly unset, the env var is ignored
      cfg[key] = Array.isArray(dflt) ? [...dflt] : dflt
    } else if (options[key] !== undefined) {
      cfg[key] = parseValue(`option ${key}`, options[key], type, false)
    } else if (env[envName] !== undefined && env[envName] !== '') {
      cfg[key] = parseValue(envName, env[envName], type, true)
    } else {
      cfg[key] = Array.isArray(dflt) ? [...dflt] : dflt
    }
  }
  const known = new Set([...Object.keys(FIELDS), 'logger', 'localDb', 'atlasDb', 'scope', 'extrasPolicy'])
  for (const key of Object.keys(options)) {
    if (!known.has(key)) throw new ConfigError(`Unknown option ${key}: see the configuration table in the README`)
  }
  cfg.logger = options.logger
  // Scope and extras policy (SYNC_SCOPE, SYNC_EXTRAS_POLICY): lib/scope.js.
  Object.assign(cfg, loadScope(options, env, (m) => new ConfigError(m)))
  if (!cfg.enabled) return Object.freeze(cfg)
  if (!cfg.localUri) {
    throw new ConfigError('MONGODB_LOCAL_URI is required when sync is enabled: expected a mongodb:// URI of the local (primary) database')
  }
  if (!cfg.atlasUri) {
    throw new ConfigError('MONGODB_ATLAS_URI is required when SYNC_ENABLED=true: expected the mongodb+srv:// URI of the Atlas cluster (or set SYNC_ENABLED=false)')
  }
  if (cfg.backoffMaxMs < cfg.backoffMinMs) {
    throw new ConfigError(`Invalid SYNC_BACKOFF_MAX_MS=${cfg.backoffMaxMs}: expected at least SYNC_BACKOFF_MIN_MS (${cfg.backoffMinMs})`)
  }
  cfg.localDb = options.localDb || dbFromUri(cfg.localUri) || 'test'
  cfg.atlasDb = options.atlasDb || dbFromUri(cfg.atlasUri) || cfg.localDb
  let dir = path.resolve(cfg.dataDir || path.join(process.cwd(), '.dualsync'))
  // The root holds the instance dirs: adoption looks there for orphans.
  cfg.dataRoot = dir
  // PM2 cluster instances share env and cwd: one journal per instance.
  const instance = env.NODE_APP_INSTANCE !== undefined && env.NODE_APP_INSTANCE !== ''
  if (instance) {
    dir = path.join(dir, `instance-${env.NODE_APP_INSTANCE}`)
  }
  cfg.dataDir = dir
  if (cfg.lockWaitMs === undefined) cfg.lockWaitMs = cfg.shutdownDrainMs + LOCK_WAIT_EXTRA_MS
  // Several instances write one local database: only then can another
  // process's older read land on Atlas last (docs/ARCHITECTURE.md).
  if (cfg.verifyAfterAck === undefined) cfg.verifyAfterAck = instance
  return Object.freeze(cfg)
}

module.exports = { loadConfig, ConfigError, FIELDS, dbFromUri, LOCK_WAIT_EXTRA_MS }
