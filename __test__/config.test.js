// Configuration from env vars: defaults, overrides, and a clear error for
// each invalid value naming the variable, the value and the expected form.
import { describe, it, expect } from 'vitest'
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { loadConfig, FIELDS } = require('../lib/config.js')
const { nativeScopeRules } = require('../lib/scope.js')
const { BSON } = require('bson')
const { createSync } = require('../index.js')

const base = { SYNC_ENABLED: 'true', MONGODB_LOCAL_URI: 'mongodb://127.0.0.1:27017/bomba', MONGODB_ATLAS_URI: 'mongodb+srv://bomba-user:Pa55word@cluster0.x.mongodb.net/bomba?retryWrites=true&w=majority' }

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const c = loadConfig({}, base)
    expect(c).toMatchObject({
      enabled: true, queueMaxSize: 10000, workerInterval: 100, maxRetries: 5, persistQueue: true,
      batchSize: 100, excludedCollections: [], fsyncIntervalMs: 1000, localDb: 'bomba', atlasDb: 'bomba'
    })
    expect(c.dataDir).toBe(path.resolve('.dualsync'))
  })

  it('reads every variable and lets options win', () => {
    const env = { ...base, SYNC_QUEUE_MAX_SIZE: '50', SYNC_WORKER_INTERVAL: '0', SYNC_MAX_RETRIES: '2', SYNC_PERSIST_QUEUE: 'false', SYNC_BATCH_SIZE: '7', SYNC_EXCLUDED_COLLECTIONS: 'bills, orders ,sessions', SYNC_DATA_DIR: '/var/lib/x' }
    const c = loadConfig({ batchSize: 9 }, env)
    expect(c).toMatchObject({ queueMaxSize: 50, workerInterval: 0, maxRetries: 2, persistQueue: false, batchSize: 9, excludedCollections: ['bills', 'orders', 'sessions'], dataDir: '/var/lib/x' })
  })

  it('gives each PM2 cluster instance its own data dir', () => {
    const c = loadConfig({}, { ...base, SYNC_DATA_DIR: '/d', NODE_APP_INSTANCE: '3' })
    expect(c.dataDir).toBe('/d/instance-3')
  })

  const bad = [
    ['SYNC_ENABLED', 'maybe', /SYNC_ENABLED="maybe": expected true or false/],
    ['SYNC_QUEUE_MAX_SIZE', 'lots', /SYNC_QUEUE_MAX_SIZE="lots": expected an integer from 1/],
    ['SYNC_QUEUE_MAX_SIZE', '0', /SYNC_QUEUE_MAX_SIZE="0"/],
    ['SYNC_WORKER_INTERVAL', '-5', /SYNC_WORKER_INTERVAL="-5": expected an integer from 0/],
    ['SYNC_MAX_RETRIES', '1.5', /SYNC_MAX_RETRIES="1.5"/],
    ['SYNC_PERSIST_QUEUE', 'yesplease', /SYNC_PERSIST_QUEUE="yesplease"/],
    ['SYNC_BATCH_SIZE', '', null],
    ['SYNC_BATCH_SIZE', 'abc', /SYNC_BATCH_SIZE="abc": expected an integer from 1 to 100000/],
    ['SYNC_EXCLUDED_COLLECTIONS', 'a,$b', /SYNC_EXCLUDED_COLLECTIONS/],
    ['MONGODB_LOCAL_URI', 'localhost:27017', /MONGODB_LOCAL_URI="localhost:27017": expected a mongodb:\/\//],
    ['MONGODB_ATLAS_URI', 'http://user:pw@x', /MONGODB_ATLAS_URI=/],
    ['SYNC_LOG_LEVEL', 'loud', /SYNC_LOG_LEVEL="loud": expected one of debug, info, warn, error/],
    ['SYNC_FSYNC_INTERVAL_MS', 'x', /SYNC_FSYNC_INTERVAL_MS/]
  ]
  it.each(bad)('%s=%j fails clearly', (name, value, pattern) => {
    const env = { ...base, [name]: value }
    if (pattern === null) {
      expect(() => loadConfig({}, env)).not.toThrow() // empty = unset = default
      return
    }
    expect(() => loadConfig({}, env)).toThrow(pattern)
  })

  it('never echoes an invalid URI with its password', () => {
    try {
      loadConfig({}, { ...base, MONGODB_ATLAS_URI: 'http://bomba:TopSecret@x' })
      throw new Error('should have thrown')
    } catch (e) {
      expect(e.message).toMatch(/MONGODB_ATLAS_URI/)
      expect(e.message).not.toContain('TopSecret')
    }
  })

  it('requires the Atlas URI only when enabled', () => {
    expect(() => loadConfig({}, { ...base, MONGODB_ATLAS_URI: '' })).toThrow(/MONGODB_ATLAS_URI is required/)
    expect(loadConfig({}, { SYNC_ENABLED: 'false' }).enabled).toBe(false)
  })

  it('rejects unknown options', () => {
    expect(() => loadConfig({ batchsize: 5 }, base)).toThrow(/Unknown option batchsize/)
  })

  it('derives the lock wait from the drain, and the check after acknowledgement from NODE_APP_INSTANCE', () => {
    const { LOCK_WAIT_EXTRA_MS } = require('../lib/config.js')
    const single = loadConfig({}, { ...base, SYNC_SHUTDOWN_DRAIN_MS: '7000', SYNC_DATA_DIR: '/tmp/ds' })
    expect(single.lockWaitMs).toBe(7000 + LOCK_WAIT_EXTRA_MS)
    expect(single.verifyAfterAck).toBe(false)
    expect(single.dataRoot).toBe(single.dataDir)
    const inst = loadConfig({}, { ...base, SYNC_DATA_DIR: '/tmp/ds', NODE_APP_INSTANCE: '2' })
    expect(inst.verifyAfterAck).toBe(true)
    expect(inst.dataRoot).toBe('/tmp/ds')
    expect(inst.dataDir).toBe('/tmp/ds/instance-2')
    // Explicit settings win both ways.
    expect(loadConfig({}, { ...base, NODE_APP_INSTANCE: '0', SYNC_VERIFY_AFTER_ACK: 'false' }).verifyAfterAck).toBe(false)
    expect(loadConfig({ verifyAfterAck: true }, base).verifyAfterAck).toBe(true)
    expect(loadConfig({}, { ...base, SYNC_LOCK_WAIT_MS: '0' }).lockWaitMs).toBe(0)
    expect(loadConfig({}, base).localReadLimit).toBe(32)
    expect(loadConfig({}, base).localReadAdaptive).toBe(true)
    expect(loadConfig({}, { ...base, SYNC_LOCAL_READ_LIMIT: '4', SYNC_LOCAL_READ_ADAPTIVE: 'false' })).toMatchObject({ localReadLimit: 4, localReadAdaptive: false })
    expect(() => loadConfig({}, { ...base, SYNC_LOCAL_READ_LIMIT: '0' })).toThrow(/SYNC_LOCAL_READ_LIMIT="0": expected an integer from 1 to 1024/)
    expect(loadConfig({}, base).drainShare).toBe(0.03)
    expect(loadConfig({}, { ...base, SYNC_DRAIN_SHARE: '1' }).drainShare).toBe(1)
    expect(() => loadConfig({}, { ...base, SYNC_DRAIN_SHARE: '0' })).toThrow(/SYNC_DRAIN_SHARE="0": expected a number from 0.01 to 1/)
    expect(() => loadConfig({ drainShare: 2 }, base)).toThrow(/drainShare/)
    expect(() => loadConfig({}, { ...base, SYNC_LOCK_WAIT_MS: 'soon' })).toThrow(/SYNC_LOCK_WAIT_MS="soon": expected an integer/)
    expect(() => loadConfig({}, { ...base, SYNC_ADOPT_INTERVAL_MS: '-1' })).toThrow(/SYNC_ADOPT_INTERVAL_MS/)
  })

  it('documents a default for every field', () => {
    for (const [key, [envName]] of Object.entries(FIELDS)) {
      expect(envName, key).toMatch(/^(SYNC_|MONGODB_)/)
    }
  })
})

describe('scope and extras policy', () => {
  const oid = '64b7f0c2a1b2c3d4e5f60718'

  it('defaults to no scope and extras policy report', () => {
    const c = loadConfig({}, base)
    expect(c.scope).toEqual({})
    expect(c.extrasPolicy).toEqual({ '*': 'report' })
  })

  it('reads SYNC_SCOPE as Extended JSON (ObjectId via $oid) and SYNC_EXTRAS_POLICY as a word or a map', () => {
    const c = loadConfig({}, { ...base, SYNC_SCOPE: `{"*": {"organization": {"$oid": "${oid}"}}, "menus": {"shared": true}}`, SYNC_EXTRAS_POLICY: '{"sessions": "delete"}' })
    expect(c.scope['*'].organization).toBeInstanceOf(BSON.ObjectId)
    expect(c.scope['*'].organization.toHexString()).toBe(oid)
    expect(c.scope.menus).toEqual({ shared: true })
    expect(c.extrasPolicy).toEqual({ '*': 'report', sessions: 'delete' })
    expect(loadConfig({}, { ...base, SYNC_EXTRAS_POLICY: 'DELETE' }).extrasPolicy).toEqual({ '*': 'delete' })
    // Each collection falls back to "*" for what it does not name.
    const rules = nativeScopeRules(c)
    const byName = Object.fromEntries(rules.map((r) => [r.collection, r]))
    expect(Object.keys(byName).sort()).toEqual(['*', 'menus', 'sessions'])
    expect(byName.sessions.extrasPolicy).toBe('delete')
    expect(BSON.deserialize(byName.sessions.filter).organization.toHexString()).toBe(oid)
    expect(BSON.deserialize(byName.menus.filter)).toEqual({ shared: true })
    expect(byName.menus.extrasPolicy).toBe('report')
  })

  it('lets options win, with ObjectIds given as values', () => {
    const org = new BSON.ObjectId(oid)
    const c = loadConfig({ scope: { bills: { organization: org } }, extrasPolicy: 'delete' }, { ...base, SYNC_SCOPE: 'not json', SYNC_EXTRAS_POLICY: 'nope' })
    expect(c.scope.bills.organization.toHexString()).toBe(oid)
    expect(c.extrasPolicy).toEqual({ '*': 'delete' })
  })

  const badScope = [
    ['SYNC_SCOPE', '{organization: 1}', /SYNC_SCOPE="\{organization: 1\}": not valid Extended JSON .*expected a JSON object of collection name/],
    ['SYNC_SCOPE', '[1]', /Invalid SYNC_SCOPE: expected a JSON object of collection name/],
    ['SYNC_SCOPE', '{"bills": 5}', /SYNC_SCOPE: the scope of "bills" is not an object/],
    ['SYNC_SCOPE', '{"*": {"_id": 1}}', /SYNC_SCOPE: the scope of "\*" filters on _id/],
    ['SYNC_SCOPE', '{"*": {"organization": {"$oid": "xyz"}}}', /SYNC_SCOPE=.*not valid Extended JSON/],
    ['SYNC_EXTRAS_POLICY', 'keep', /SYNC_EXTRAS_POLICY="keep": expected report or delete/],
    ['SYNC_EXTRAS_POLICY', '{"bills": "purge"}', /SYNC_EXTRAS_POLICY: the policy of "bills" is "purge"; expected report or delete/],
    ['SYNC_EXTRAS_POLICY', '{"bills": ', /SYNC_EXTRAS_POLICY=.*not valid JSON/]
  ]
  it.each(badScope)('%s=%j fails createSync with ERR_SYNC_CONFIG naming it', async (name, value, pattern) => {
    expect(() => loadConfig({}, { ...base, [name]: value })).toThrow(pattern)
    const env = { ...process.env }
    try {
      Object.assign(process.env, base, { [name]: value })
      const err = await createSync({}).then(() => null, (e) => e)
      expect(err).not.toBeNull()
      expect(err.code).toBe('ERR_SYNC_CONFIG')
      expect(err.message).toMatch(pattern)
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in env)) delete process.env[k]
      Object.assign(process.env, env)
    }
  })

  it('a bad option names the option', async () => {
    const err = await createSync({ ...optionsFrom(base), extrasPolicy: 'mirror' }).then(() => null, (e) => e)
    expect(err.code).toBe('ERR_SYNC_CONFIG')
    expect(err.message).toMatch(/option extrasPolicy="mirror": expected report or delete/)
    const err2 = await createSync({ ...optionsFrom(base), scope: { bills: 'org-a' } }).then(() => null, (e) => e)
    expect(err2.message).toMatch(/option scope: the scope of "bills" is not an object/)
  })
})

function optionsFrom (env) {
  return { enabled: true, localUri: env.MONGODB_LOCAL_URI, atlasUri: env.MONGODB_ATLAS_URI }
}

describe('SYNC_ENABLED=false', () => {
  it('registers no hook, logs the line operators look for, and every call is a no-op', async () => {
    const lines = []
    const logger = { info: (m) => lines.push(m), warn: (m) => lines.push(m), error: (m) => lines.push(m), debug: () => {} }
    const sync = await createSync({ enabled: false, logger })
    expect(lines).toContain('Sync disabled by configuration')
    const mongoose = require('mongoose')
    const schema = new mongoose.Schema({ a: Number })
    const hooksBefore = schema.s.hooks._pres.size + schema.s.hooks._posts.size
    schema.plugin(sync.plugin)
    expect(schema.s.hooks._pres.size + schema.s.hooks._posts.size).toBe(hooksBefore)
    expect(sync.enqueue({ collection: 'x', id: 1 })).toBe(0)
    expect(sync.metrics()).toEqual({ enabled: false, state: 'disabled' })
    expect(await sync.flush()).toBe(true)
    expect(await sync.close()).toBe(true)
  })
})
