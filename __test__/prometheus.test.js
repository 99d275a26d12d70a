// Prometheus exposition: the text must satisfy a strict reading of text
// format 0.0.4 (checked by a parser written here from the format's rules and
// by an independent package), and every value must equal the JSON metrics of
// a real engine taken at the same moment. The prom-client adapter is checked
// against the real prom-client, in both of its content types.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { openAdminSync } from './helpers/adminsync.js'

const require = createRequire(import.meta.url)
const express = require('express')
const request = require('supertest')
const promClient = require('prom-client')
const parsePrometheusTextFormat = require('parse-prometheus-text-format')
const { createRouter } = require('../lib/router.js')
const { toPrometheus, registerWithPromClient } = require('../lib/prometheus.js')

const TOKEN = 'secret-token'
const { secrets } = require('./helpers/admin.js')

// ---- a strict parser of the text format 0.0.4 ------------------------------------------------
const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/
const FLOAT = /^(?:NaN|[+-]?Inf|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$/
const TYPES = ['counter', 'gauge', 'summary', 'histogram', 'untyped']

function parseFloatStrict (s, where) {
  if (!FLOAT.test(s)) throw new Error(`${where}: bad value ${JSON.stringify(s)}`)
  if (s === 'NaN') return NaN
  if (/^[+]?Inf$/.test(s)) return Infinity
  if (s === '-Inf') return -Infinity
  return Number(s)
}

function unescapeStrict (s, allowQuote, where) {
  let out = ''
  for (let i = 0; i < s.length; i++) {
    if (s[i] !== '\\') { out += s[i]; continue }
    const n = s[++i]
    if (n === '\\') out += '\\'
    else if (n === 'n') out += '\n'
    else if (n === '"' && allowQuote) out += '"'
    else throw new Error(`${where}: invalid escape \\${n}`)
  }
  return out
}

function parseLabels (s, where) {
  // s starts right after '{'; returns [labels, rest after '}']
  const labels = {}
  let rest = s
  while (!rest.startsWith('}')) {
    const m = LABEL_NAME.exec(rest)
    if (!m) throw new Error(`${where}: bad label name at ${JSON.stringify(rest)}`)
    const name = m[0]
    if (name in labels) throw new Error(`${where}: duplicate label ${name}`)
    rest = rest.slice(name.length)
    if (!rest.startsWith('="')) throw new Error(`${where}: expected =" after ${name}`)
    rest = rest.slice(2)
    let raw = ''
    let i = 0
    for (; i < rest.length && rest[i] !== '"'; i++) {
      if (rest[i] === '\n') throw new Error(`${where}: raw line feed in label value`)
      if (rest[i] === '\\') raw += rest[i++]
      raw += rest[i]
    }
    if (rest[i] !== '"') throw new Error(`${where}: unterminated label value`)
    labels[name] = unescapeStrict(raw, true, where)
    rest = rest.slice(i + 1)
    if (rest.startsWith(',')) {
      rest = rest.slice(1)
      if (rest.startsWith('}')) throw new Error(`${where}: trailing comma in labels`)
    } else if (!rest.startsWith('}')) throw new Error(`${where}: expected , or } after label ${name}`)
  }
  return [labels, rest.slice(1)]
}

/**
 * Parses exposition text, throwing on anything the format does not allow (or that
 * we promise not to do: samples before their TYPE, families split apart, duplicates).
 * @returns {Map<string, {type, help, samples: Array<{name, labels, value}>}>}
 */
function strictParse (text) {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a line feed')
  const families = new Map()
  const finished = new Set()
  const series = new Set()
  let current = null
  const enter = (name, where) => {
    if (current === name) return
    if (finished.has(name)) throw new Error(`${where}: family ${name} is not contiguous`)
    if (current) finished.add(current)
    current = name
  }
  const lines = text.slice(0, -1).split('\n')
  lines.forEach((line, idx) => {
    const where = `line ${idx + 1}`
    if (line === '') return
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line)
      if (!m) {
        if (/^#\s*(HELP|TYPE)\b/.test(line)) throw new Error(`${where}: malformed ${line}`)
        return // plain comment
      }
      const [, kind, name, rest] = m
      if (!new RegExp(`${METRIC_NAME.source}$`).test(name)) throw new Error(`${where}: bad metric name ${name}`)
      enter(name, where)
      const fam = families.get(name) || { type: undefined, help: undefined, samples: [] }
      families.set(name, fam)
      if (kind === 'HELP') {
        if (fam.help !== undefined) throw new Error(`${where}: second HELP for ${name}`)
        fam.help = unescapeStrict(rest, false, where)
      } else {
        if (fam.type !== undefined) throw new Error(`${where}: second TYPE for ${name}`)
        if (fam.samples.length) throw new Error(`${where}: TYPE after samples of ${name}`)
        if (!TYPES.includes(rest)) throw new Error(`${where}: unknown type ${rest}`)
        fam.type = rest
      }
      return
    }
    const nm = METRIC_NAME.exec(line)
    if (!nm) throw new Error(`${where}: bad sample ${JSON.stringify(line)}`)
    const name = nm[0]
    let rest = line.slice(name.length)
    let labels = {}
    if (rest.startsWith('{')) [labels, rest] = parseLabels(rest.slice(1), where)
    const parts = rest.split(' ')
    if (parts[0] !== '' || parts.length < 2 || parts.length > 3) throw new Error(`${where}: expected " value [timestamp]" in ${JSON.stringify(line)}`)
    const value = parseFloatStrict(parts[1], where)
    if (parts.length === 3 && !/^-?\d+$/.test(parts[2])) throw new Error(`${where}: bad timestamp`)
    const base = name.replace(/_(sum|count)$/, '')
    const famName = families.get(base) && families.get(base).type === 'summary' ? base : name
    const fam = families.get(famName)
    if (!fam || !fam.type) throw new Error(`${where}: sample ${name} before its # TYPE`)
    enter(famName, where)
    if (fam.type === 'summary') {
      if (name === famName) {
        if (!('quantile' in labels)) throw new Error(`${where}: summary sample without quantile`)
        const q = parseFloatStrict(labels.quantile, where)
        if (!(q >= 0 && q <= 1)) throw new Error(`${where}: quantile ${q} outside [0,1]`)
      } else if ('quantile' in labels) throw new Error(`${where}: quantile label on ${name}`)
    }
    if (fam.type === 'counter' && !(value >= 0)) throw new Error(`${where}: counter ${name} is ${value}`)
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (series.has(key)) throw new Error(`${where}: duplicate series ${key}`)
    series.add(key)
    fam.samples.push({ name, labels, value })
  })
  for (const [name, fam] of families) {
    if (fam.type === undefined || fam.help === undefined) throw new Error(`family ${name} lacks HELP or TYPE`)
  }
  return families
}

/** Value of one series (exactly one must match). */
function valueOf (families, name, labels = {}) {
  const famName = families.has(name) ? name : name.replace(/_(sum|count)$/, '')
  const fam = families.get(famName)
  if (!fam) throw new Error(`no family for ${name}`)
  const hits = fam.samples.filter((s) => s.name === name &&
    Object.keys(labels).length === Object.keys(s.labels).length &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  if (hits.length !== 1) throw new Error(`${hits.length} samples for ${name}${JSON.stringify(labels)}`)
  return hits[0].value
}

/**
 * Every value the exposition must hold for a snapshot (written out independently of lib/prometheus.js).
 * `after`: a snapshot taken just after the exposition (clock-driven values are bounded by it).
 */
function expectMatches (fams, m, p = 'dualsync_', after = m) {
  const eq = (name, labels, v) => expect(valueOf(fams, p + name, labels), `${name} ${JSON.stringify(labels)}`).toBe(v)
  // A sliding-window rate is not monotonic between two calls: each call adds a sample and
  // drops those older than 10 s, so the window's start can move between the snapshots (a CI run
  // saw 71.55 outside [71.32, …]). What holds at any moment: finite, ≥ 0, and at most the
  // applied total over the shortest span the engine divides by (0.5 s).
  const rate = (name, total) => {
    const v = valueOf(fams, p + name)
    expect(Number.isFinite(v), name).toBe(true)
    expect(v, name).toBeGreaterThanOrEqual(0)
    expect(v, name).toBeLessThanOrEqual(total / 0.5)
  }
  eq('enabled', {}, 1)
  eq('up', {}, m.state === 'running' ? 1 : 0)
  eq('paused', {}, m.state === 'paused' ? 1 : 0)
  eq('enqueued_total', {}, m.enqueued)
  eq('coalesced_total', {}, m.coalesced)
  eq('applied_total', { op: 'upsert' }, m.applied.upserts)
  eq('applied_total', { op: 'delete' }, m.applied.deletes)
  eq('batches_total', {}, m.batches)
  eq('retries_total', {}, m.retries)
  eq('failures_total', { kind: 'transient' }, m.failures.transient)
  eq('failures_total', { kind: 'permanent' }, m.failures.permanent)
  eq('batch_failures_total', {}, m.failures.batches)
  eq('dead_lettered_total', {}, m.deadLettered)
  eq('hook_errors_total', {}, m.hookErrors)
  eq('invalid_ops_total', {}, m.invalidOps)
  eq('lost_marks_total', {}, m.lostMarks.count)
  eq('reconcile_pending_collections', {}, m.lostMarks.reconcilePending.length)
  for (const [c, v] of Object.entries(m.collections)) {
    eq('collection_enqueued_total', { collection: c }, v.enqueued)
    eq('collection_applied_total', { collection: c, op: 'upsert' }, v.upserts)
    eq('collection_applied_total', { collection: c, op: 'delete' }, v.deletes)
    eq('collection_failures_total', { collection: c }, v.failures)
  }
  expect(fams.get(`${p}collection_enqueued_total`).samples).toHaveLength(Object.keys(m.collections).length)
  eq('backlog', { location: 'memory' }, m.backlog.memory)
  eq('backlog', { location: 'disk' }, m.backlog.disk)
  eq('backlog', { location: 'in_flight' }, m.backlog.inFlight)
  eq('dead_letters', {}, m.deadLetters)
  eq('extras_total', { action: 'reported' }, m.scope.extrasReported)
  eq('extras_total', { action: 'deleted' }, m.scope.extrasDeleted)
  eq('atlas_connected', {}, m.atlas.connected ? 1 : 0)
  eq('success_ratio', {}, m.successRate)
  rate('applied_per_second', after.applied.total)
  eq('journal_bytes', {}, m.journal.bytes)
  eq('journal_segments', {}, m.journal.segments)
  for (const [fam, h] of [['apply_latency_seconds', m.applyLatencyMs], ['lag_seconds', m.lagMs]]) {
    eq(`${fam}_count`, {}, h.count)
    eq(`${fam}_sum`, {}, h.sum / 1000)
    if (h.count > 0) {
      eq(fam, { quantile: '0.5' }, h.p50 / 1000)
      eq(fam, { quantile: '0.95' }, h.p95 / 1000)
      eq(fam, { quantile: '0.99' }, h.p99 / 1000)
    }
  }
}

// ---- tests ------------------------------------------------------------------------------------

describe('toPrometheus (text rules)', () => {
  const snapshot = {
    enabled: true,
    state: 'running',
    enqueued: 7,
    coalesced: 1,
    applied: { upserts: 5, deletes: 1, total: 6 },
    batches: 3,
    retries: 2,
    failures: { transient: 2, permanent: 1, batches: 2 },
    deadLettered: 1,
    deadLetters: 1,
    invalidOps: 0,
    successRate: 0.6,
    throughput: { appliedPerSec: 2.5 },
    applyLatencyMs: { count: 3, p50: 12, p95: 40, p99: 41, max: 41, sum: 70 },
    lagMs: { count: 0, p50: 0, p95: 0, p99: 0, max: 0, sum: 0 },
    atlas: { connected: false, since: '2026-01-01T00:00:00.000Z', lastSuccessAt: null, lastError: 'x' },
    collections: { 'app.we"ird\\name\nx': { enqueued: 7, upserts: 5, deletes: 1, failures: 1 } },
    uptimeMs: 12345,
    backlog: { total: 3, memory: 1, disk: 2, inFlight: 0 },
    oldestPendingAgeMs: 2500,
    journal: { persist: true, bytes: 4096, segments: 2, corruptRecords: 0, recovered: 0, checkpoint: 1, end: 5 },
    hookErrors: 0,
    lostMarks: { count: 3, reconcilePending: ['app.bills'], lastError: 'journal write failed' },
    fullSync: null,
    scope: { rules: { '*': { scope: { organization: { $oid: '64b7f0c2a1b2c3d4e5f60718' } }, extrasPolicy: 'report' } }, extrasReported: 4, extrasDeleted: 1 }
  }

  it('is strictly valid and round-trips label values through escaping', () => {
    const text = toPrometheus(snapshot, { now: Date.parse('2026-01-01T00:01:40.000Z') })
    const fams = strictParse(text)
    expectMatches(fams, snapshot)
    expect(valueOf(fams, 'dualsync_oldest_pending_age_seconds')).toBe(2.5)
    expect(valueOf(fams, 'dualsync_atlas_state_since_seconds')).toBe(100)
    expect(valueOf(fams, 'dualsync_uptime_seconds')).toBe(12.345)
    // Empty summaries carry no made-up quantiles.
    expect(fams.get('dualsync_lag_seconds').samples.map((s) => s.name)).toEqual(['dualsync_lag_seconds_sum', 'dualsync_lag_seconds_count'])
    // The label value is escaped on one line and comes back intact.
    expect(text).toContain('collection="app.we\\"ird\\\\name\\nx"')
    for (const f of fams.values()) {
      if (f.type === 'counter') for (const s of f.samples) expect(s.name).toMatch(/_total$/)
    }
    // An independent parser reads the same values.
    const other = parsePrometheusTextFormat(text)
    const coll = other.find((f) => f.name === 'dualsync_collection_failures_total')
    expect(coll.type).toBe('COUNTER')
    expect(coll.metrics[0].labels.collection).toBe('app.we"ird\\name\nx')
    const lat = other.find((f) => f.name === 'dualsync_apply_latency_seconds')
    expect(lat.metrics[0]).toMatchObject({ count: '3', sum: '0.07', quantiles: { 0.5: '0.012', 0.95: '0.04', 0.99: '0.041' } })
    expect(other.map((f) => f.name).sort()).toEqual([...fams.keys()].sort())
  })

  it('honours the prefix option and refuses an invalid one', () => {
    const fams = strictParse(toPrometheus(snapshot, { prefix: 'myapp_sync_' }))
    expectMatches(fams, snapshot, 'myapp_sync_')
    expect([...fams.keys()].every((n) => n.startsWith('myapp_sync_'))).toBe(true)
    expect(() => toPrometheus(snapshot, { prefix: 'bad-prefix' })).toThrow(/prefix must match/)
  })

  it('reports a disabled or closed sync as not up', () => {
    const disabled = strictParse(toPrometheus({ enabled: false, state: 'disabled' }))
    expect(valueOf(disabled, 'dualsync_enabled')).toBe(0)
    expect(valueOf(disabled, 'dualsync_up')).toBe(0)
    expect(disabled.has('dualsync_enqueued_total')).toBe(false)
    const closed = strictParse(toPrometheus(null))
    expect(valueOf(closed, 'dualsync_enabled')).toBe(1)
    expect(valueOf(closed, 'dualsync_up')).toBe(0)
  })

  it('the strict parser itself rejects broken text', () => {
    expect(() => strictParse('x 1')).toThrow(/line feed/)
    expect(() => strictParse('x 1\n')).toThrow(/before its # TYPE/)
    expect(() => strictParse('# HELP x h\n# TYPE x gauge\nx{a="b\\q"} 1\n')).toThrow(/invalid escape/)
    expect(() => strictParse('# HELP x h\n# TYPE x gauge\nx{a="b"} one\n')).toThrow(/bad value/)
    expect(() => strictParse('# HELP x h\n# TYPE x gauge\nx 1\nx 2\n')).toThrow(/duplicate series/)
    expect(() => strictParse('# HELP x h\n# TYPE x summary\nx 1\n')).toThrow(/without quantile/)
    expect(() => strictParse('# HELP x h\n# TYPE x gauge\n# HELP y h\n# TYPE y gauge\ny 1\nx 1\n')).toThrow(/not contiguous/)
  })
})

describe('against a real engine', () => {
  let servers, dbName, local, atlas, sync, base, server

  beforeAll(async () => {
    ;({ servers, dbName, local, atlas, sync } = await openAdminSync('prom', TOKEN, {
      workerInterval: 0,
      logLevel: 'warn',
      logger: { warn () {}, error () {}, info () {}, debug () {} }
    }))
    // Traffic in two collections: inserts, deletes, and one real dead letter.
    const a = local.db(dbName).collection('alpha')
    const ins = await a.insertMany(Array.from({ length: 30 }, (_, i) => ({ i })))
    const ids = Object.values(ins.insertedIds)
    sync.enqueue(ids.map((id) => ({ collection: 'alpha', id })))
    // Drained first, so the five below are deletes and nothing else (a re-read after the delete would be one too).
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)
    await a.deleteMany({ i: { $lt: 5 } })
    sync.enqueue(ids.slice(0, 5).map((id) => ({ collection: 'alpha', id })))
    await atlas.db(dbName).collection('beta').createIndex({ k: 1 }, { unique: true })
    const b = local.db(dbName).collection('beta')
    const first = await b.insertOne({ k: 1 })
    sync.enqueue({ collection: 'beta', id: first.insertedId })
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)
    const second = await b.insertOne({ k: 1 })
    sync.enqueue({ collection: 'beta', id: second.insertedId })
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)

    const app = express()
    app.use('/admin', createRouter(sync))
    await new Promise((resolve) => {
      server = app.listen(0, '127.0.0.1', () => resolve())
    })
    base = `http://127.0.0.1:${server.address().port}`
  })

  afterAll(async () => {
    await new Promise((resolve) => (server ? server.close(resolve) : resolve()))
    await sync?.close({ drainTimeoutMs: 0 })
    await local?.close()
    await atlas?.close()
  })

  it('GET /metrics/prometheus equals GET /metrics taken at the same moment', async () => {
    // Paused, with a backlog waiting: counters hold still between the two reads.
    sync.pause()
    const more = await local.db(dbName).collection('alpha').insertMany([{ late: 1 }, { late: 2 }])
    sync.enqueue(Object.values(more.insertedIds).map((id) => ({ collection: 'alpha', id })))
    try {
      const json = await request(base).get('/admin/metrics').set('Authorization', `Bearer ${TOKEN}`)
      const prom = await request(base).get('/admin/metrics/prometheus').set('Authorization', `Bearer ${TOKEN}`)
      const after = await request(base).get('/admin/metrics').set('Authorization', `Bearer ${TOKEN}`)
      expect(prom.status).toBe(200)
      expect(prom.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8')
      const m = json.body
      // Nothing but clocks moved between the reads.
      const still = ({ uptimeMs, oldestPendingAgeMs, atlas, throughput, ...rest }) => rest
      expect(still(after.body)).toEqual(still(m))
      expect(m.state).toBe('paused')
      expect(m.deadLetters).toBe(1)
      expect(m.applied.deletes).toBe(5)
      expect(m.backlog.total).toBeGreaterThanOrEqual(2)
      const fams = strictParse(prom.text)
      expectMatches(fams, m, 'dualsync_', after.body)
      const age = valueOf(fams, 'dualsync_oldest_pending_age_seconds')
      expect(age).toBeGreaterThanOrEqual(m.oldestPendingAgeMs / 1000)
      expect(age).toBeLessThanOrEqual(after.body.oldestPendingAgeMs / 1000)
      for (const secret of secrets()) expect(prom.text).not.toContain(secret)
      // And the independent parser agrees on a few.
      const other = parsePrometheusTextFormat(prom.text)
      const applied = other.find((f) => f.name === 'dualsync_applied_total').metrics
      expect(applied.find((x) => x.labels.op === 'delete').value).toBe(String(m.applied.deletes))
    } finally {
      sync.resume()
    }
    expect(await sync.flush({ timeoutMs: 30_000 })).toBe(true)
  })

  it('joins an app\'s prom-client registry (Prometheus text and OpenMetrics)', async () => {
    const register = new promClient.Registry()
    const appCounter = new promClient.Counter({ name: 'app_requests_total', help: 'App requests.', registers: [register] })
    appCounter.inc(3)
    const unregister = registerWithPromClient(sync, register)
    sync.pause()
    try {
      const m = sync.metrics()
      const text = await register.metrics()
      const fams = strictParse(text)
      expect(valueOf(fams, 'app_requests_total')).toBe(3)
      expectMatches(fams, m, 'dualsync_', sync.metrics())
      expect(fams.get('dualsync_apply_latency_seconds').type).toBe('summary')

      // The app serves its /metrics as usual and ours come along.
      const app = express()
      app.get('/metrics', async (req, res) => {
        res.set('Content-Type', register.contentType)
        res.end(await register.metrics())
      })
      const scraped = await request(app).get('/metrics')
      expect(scraped.headers['content-type']).toBe(promClient.Registry.PROMETHEUS_CONTENT_TYPE)
      expectMatches(strictParse(scraped.text), m, 'dualsync_', sync.metrics())

      register.setContentType(promClient.Registry.OPENMETRICS_CONTENT_TYPE)
      const om = await register.metrics()
      expect(om).toMatch(/^# TYPE dualsync_enqueued counter$/m)
      expect(om).toMatch(new RegExp(`^dualsync_enqueued_total ${m.enqueued}$`, 'm'))
      expect(om).toMatch(/^dualsync_applied_total\{op="delete"\} 5$/m)
      expect(om.endsWith('# EOF\n')).toBe(true)
      // Back to 0.0.4: our counters keep their _total (prom-client renamed them in place during OpenMetrics).
      register.setContentType(promClient.Registry.PROMETHEUS_CONTENT_TYPE)
      expectMatches(strictParse(await register.metrics()), m, 'dualsync_', sync.metrics())
    } finally {
      sync.resume()
    }
    unregister()
    const left = await register.metrics()
    expect(left).toMatch(/^app_requests(_total)? 3$/m)
    expect(left).not.toContain('dualsync_')
    expect(() => registerWithPromClient(sync, {})).toThrow(/prom-client Registry/)
    expect(() => registerWithPromClient({}, register)).toThrow(/createSync\(\) returned/)
  })
})
