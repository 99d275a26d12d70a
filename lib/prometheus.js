'use strict'
/**
 * Prometheus exposition of a metrics() snapshot: text format 0.0.4, and an
 * adapter that puts the same families into an app's own prom-client Registry.
 * Both are built from one list of families, so they can never disagree.
 */

const DEFAULT_PREFIX = 'dualsync_'
const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
const QUANTILES = [['0.5', 'p50'], ['0.95', 'p95'], ['0.99', 'p99']]
const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/

/** Finite number or 0: a missing field must not turn into "undefined" in the text. */
function num (v) {
  if (typeof v === 'boolean') return v ? 1 : 0
  const n = Number(v)
  return Number.isFinite(n) ? n : 0
}

const seconds = (ms) => num(ms) / 1000

/**
 * @typedef {{suffix?: string, labels?: Record<string,string>, value: number}} Sample
 * @typedef {{name: string, help: string, type: 'counter'|'gauge'|'summary', samples: Sample[]}} Family
 */

/**
 * The metric families for a snapshot (the single source of truth for both exporters).
 * @param {object|null} m metrics() snapshot; null when the engine is closed
 * @param {{prefix?: string, now?: number}} [opts] now: clock for durations (ms since epoch)
 * @returns {Family[]}
 */
function families (m, { prefix = DEFAULT_PREFIX, now = Date.now() } = {}) {
  if (typeof prefix !== 'string' || (prefix !== '' && !NAME_RE.test(prefix))) {
    throw new TypeError(`toPrometheus: prefix must match ${NAME_RE} (got ${JSON.stringify(prefix)})`)
  }
  const out = []
  const fam = (name, type, help, samples) => out.push({ name: prefix + name, type, help, samples })
  const one = (value) => [{ value: num(value) }]

  const snapshot = m && typeof m === 'object' ? m : { state: 'closed' }
  const enabled = snapshot.enabled !== false
  const state = snapshot.state
  fam('enabled', 'gauge', 'Whether sync is enabled by configuration (1) or disabled (0).', one(enabled))
  fam('up', 'gauge', 'Whether the sync engine is running (1) or paused, closed or disabled (0).', one(state === 'running'))
  fam('paused', 'gauge', 'Whether draining to Atlas is paused (1).', one(state === 'paused'))
  if (!enabled || !m || state === 'closed') return out

  const applied = snapshot.applied || {}
  const failures = snapshot.failures || {}
  const backlog = snapshot.backlog || {}
  const atlas = snapshot.atlas || {}
  const journal = snapshot.journal || {}
  const collections = snapshot.collections || {}
  const colls = Object.keys(collections).sort()

  fam('enqueued_total', 'counter', 'Marks enqueued (document writes captured).', one(snapshot.enqueued))
  fam('coalesced_total', 'counter', 'Marks merged into an earlier pending mark of the same document.', one(snapshot.coalesced))
  fam('applied_total', 'counter', 'Documents written to Atlas, by operation.', [
    { labels: { op: 'upsert' }, value: num(applied.upserts) },
    { labels: { op: 'delete' }, value: num(applied.deletes) }
  ])
  fam('batches_total', 'counter', 'Batches applied to Atlas.', one(snapshot.batches))
  fam('retries_total', 'counter', 'Batch retries after a failure.', one(snapshot.retries))
  fam('failures_total', 'counter', 'Failed Atlas writes, by kind (transient errors are retried without limit).', [
    { labels: { kind: 'transient' }, value: num(failures.transient) },
    { labels: { kind: 'permanent' }, value: num(failures.permanent) }
  ])
  fam('batch_failures_total', 'counter', 'Batches that failed (at least one error) before a retry.', one(failures.batches))
  fam('dead_lettered_total', 'counter', 'Documents moved to the dead-letter store.', one(snapshot.deadLettered))
  fam('hook_errors_total', 'counter', 'Capture hook errors (the app write itself was not affected).', one(snapshot.hookErrors))
  fam('invalid_ops_total', 'counter', 'Marks rejected as invalid.', one(snapshot.invalidOps))
  const lost = snapshot.lostMarks || {}
  fam('lost_marks_total', 'counter', 'Marks that could not be journaled (disk full, broken journal); their collections are reconciled once it works again.', one(lost.count))
  fam('reconcile_pending_collections', 'gauge', 'Collections of lost marks whose reconcile is not queued yet.', one((lost.reconcilePending || []).length))
  fam('local_read_limit', 'gauge', 'Reads of local the drain may run at once now (SYNC_LOCAL_READ_LIMIT, lowered while the local server is busy).', one(snapshot.localReadLimit))
  fam('drain_share', 'gauge', 'Share of the time the drain kept to at its last local read: SYNC_DRAIN_SHARE while the app was writing, else 1.', one(snapshot.drainShare))
  fam('verify_resends_total', 'counter', 'Acknowledged documents sent again because local changed meanwhile (SYNC_VERIFY_AFTER_ACK).', one(snapshot.verifyResends))
  fam('collection_enqueued_total', 'counter', 'Marks enqueued, by collection (db.collection).',
    colls.map((c) => ({ labels: { collection: c }, value: num(collections[c].enqueued) })))
  fam('collection_applied_total', 'counter', 'Documents written to Atlas, by collection and operation.',
    colls.flatMap((c) => [
      { labels: { collection: c, op: 'upsert' }, value: num(collections[c].upserts) },
      { labels: { collection: c, op: 'delete' }, value: num(collections[c].deletes) }
    ]))
  fam('collection_failures_total', 'counter', 'Failed Atlas writes, by collection.',
    colls.map((c) => ({ labels: { collection: c }, value: num(collections[c].failures) })))

  fam('backlog', 'gauge', 'Marks not yet applied to Atlas, by where they wait.', [
    { labels: { location: 'memory' }, value: num(backlog.memory) },
    { labels: { location: 'disk' }, value: num(backlog.disk) },
    { labels: { location: 'in_flight' }, value: num(backlog.inFlight) }
  ])
  fam('dead_letters', 'gauge', 'Documents currently in the dead-letter store.', one(snapshot.deadLetters))
  fam('oldest_pending_age_seconds', 'gauge', 'Age of the oldest write not yet on Atlas (0 when nothing is pending).',
    one(seconds(snapshot.oldestPendingAgeMs)))
  fam('atlas_connected', 'gauge', 'Whether the last contact with Atlas succeeded (1) or failed (0).', one(atlas.connected === true))
  const since = atlas.since ? Date.parse(atlas.since) : NaN
  fam('atlas_state_since_seconds', 'gauge', 'Seconds the Atlas connection has been in its current state (connected or not).',
    one(Number.isFinite(since) ? Math.max(0, (now - since) / 1000) : 0))
  fam('success_ratio', 'gauge', 'Share of batch attempts of the last 5 minutes that succeeded (0..1; 1 when there were none).',
    one(typeof snapshot.successRate === 'number' ? snapshot.successRate : 1))
  fam('applied_per_second', 'gauge', 'Documents applied to Atlas per second (recent window).',
    one(snapshot.throughput && snapshot.throughput.appliedPerSec))
  fam('journal_bytes', 'gauge', 'Bytes in the on-disk journal.', one(journal.bytes))
  fam('journal_segments', 'gauge', 'Segment files in the on-disk journal.', one(journal.segments))
  fam('journal_corrupt_records', 'gauge', 'Journal records found corrupt at recovery (their collections are reconciled).',
    one(journal.corruptRecords))
  fam('uptime_seconds', 'gauge', 'Seconds since the engine started.', one(seconds(snapshot.uptimeMs)))
  const scope = snapshot.scope || {}
  fam('extras_total', 'counter', 'In-scope documents only Atlas had, found by full syncs and collection reconciles, by what the extras policy did (reported = left in place).', [
    { labels: { action: 'reported' }, value: num(scope.extrasReported) },
    { labels: { action: 'deleted' }, value: num(scope.extrasDeleted) }
  ])
  const job = snapshot.fullSync
  const running = !!(job && job.state === 'running')
  fam('full_sync_running', 'gauge', 'Whether a full sync or verify job is running (1).', one(running))
  fam('full_sync_docs_scanned', 'gauge', 'Documents compared by the current or last full sync / verify job.',
    one(job && job.docsScanned))
  fam('full_sync_differences', 'gauge', 'Differences found by the current or last full sync / verify job.',
    one(job && job.differences))

  fam('apply_latency_seconds', 'summary', 'Time to apply a batch to Atlas.', summary(snapshot.applyLatencyMs))
  fam('lag_seconds', 'summary', 'Time from enqueue to the write being on Atlas.', summary(snapshot.lagMs))
  return out
}

/** Quantile samples are left out while empty: 0 would claim a measurement that never happened. */
function summary (h) {
  const hist = h || {}
  const count = num(hist.count)
  const samples = count > 0
    ? QUANTILES.map(([q, key]) => ({ labels: { quantile: q }, value: seconds(hist[key]) }))
    : []
  samples.push({ suffix: '_sum', value: seconds(hist.sum) }, { suffix: '_count', value: count })
  return samples
}

function escapeHelp (s) {
  return String(s).replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
}

/** Label value escaping of the text format: backslash, double quote, line feed. */
function escapeLabelValue (s) {
  return String(s).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

function formatValue (v) {
  if (Number.isNaN(v)) return 'NaN'
  if (v === Infinity) return '+Inf'
  if (v === -Infinity) return '-Inf'
  return String(v)
}

function formatLabels (labels) {
  const keys = labels ? Object.keys(labels) : []
  if (keys.length === 0) return ''
  return `{${keys.map((k) => `${k}="${escapeLabelValue(labels[k])}"`).join(',')}}`
}

/**
 * Renders a metrics() snapshot as Prometheus text exposition format 0.0.4
 * (serve it with {@link CONTENT_TYPE}). Every family has `# HELP` and `# TYPE`.
 * Counters end in `_total`; latencies are summaries in seconds (quantiles
 * 0.5/0.95/0.99, `_sum`, `_count`). A disabled or closed sync yields only
 * `enabled`, `up` and `paused`.
 * @param {object|null} metrics snapshot from sync.metrics() (null: closed)
 * @param {{prefix?: string, now?: number}} [opts] prefix: metric name prefix (default 'dualsync_')
 * @returns {string}
 */
function toPrometheus (metrics, opts = {}) {
  const lines = []
  for (const f of families(metrics, opts)) {
    lines.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`)
    for (const s of f.samples) lines.push(`${f.name}${s.suffix || ''}${formatLabels(s.labels)} ${formatValue(s.value)}`)
  }
  return lines.join('\n') + '\n'
}

/** metrics() of a sync, or null when it is closed (the exporters then report up=0). */
function snapshotOf (sync) {
  try {
    return sync.metrics()
  } catch (e) {
    if (e && e.code === 'ERR_SYNC_CLOSED') return null
    throw e
  }
}

/**
 * Adds our families to an app's existing prom-client Registry, so the app's
 * own `/metrics` (`await register.metrics()`) includes them. prom-client is
 * not a dependency of ours: prom-client 15 has no collector API, but its
 * Registry accepts any object with `name`, `help`, `type`, `get()` through
 * `registerMetric()`, which is what we pass (one object per family).
 * Works in both of its content types (Prometheus 0.0.4 and OpenMetrics,
 * where prom-client itself renames counters). One scrape takes a single
 * metrics() snapshot, so families are consistent with each other.
 * Call the returned function to unregister.
 * @param {{metrics: Function}} sync the object createSync() returned
 * @param {{registerMetric: Function, removeSingleMetric?: Function}} register a prom-client Registry (e.g. `require('prom-client').register`)
 * @param {{prefix?: string}} [opts]
 * @returns {() => void} unregister
 */
function registerWithPromClient (sync, register, opts = {}) {
  if (!sync || typeof sync.metrics !== 'function') {
    throw new TypeError('registerWithPromClient(sync, register): sync must be the object createSync() returned')
  }
  if (!register || typeof register.registerMetric !== 'function') {
    throw new TypeError('registerWithPromClient(sync, register): register must be a prom-client Registry (it has registerMetric())')
  }
  // One snapshot per scrape: the registry calls every get() in one synchronous loop.
  let cached = null
  const current = () => {
    if (!cached) {
      const fams = families(snapshotOf(sync), opts)
      cached = new Map(fams.map((f) => [f.name, f]))
      queueMicrotask(() => { cached = null })
    }
    return cached
  }
  // The family list is fixed at registration; a running sync has them all.
  const names = families({ enabled: true, state: 'running' }, opts).map((f) => [f.name, f])
  const registered = []
  const OPENMETRICS = 'application/openmetrics-text'
  for (const [name, proto] of names) {
    // prom-client's OpenMetrics mode drops `_total` from counter family names and adds it back per sample.
    const familyName = () => (proto.type === 'counter' && String(register.contentType || '').startsWith(OPENMETRICS)
      ? name.replace(/_total$/, '')
      : name)
    const metric = {
      help: proto.help,
      type: proto.type,
      aggregator: 'sum',
      reset () {},
      async get () {
        const f = current().get(name)
        return {
          name: familyName(),
          help: proto.help,
          type: proto.type,
          aggregator: 'sum',
          values: f
            ? f.samples.map((s) => ({ value: s.value, labels: s.labels || {}, ...(s.suffix ? { metricName: name + s.suffix } : {}) }))
            : []
        }
      }
    }
    // The registry renames counters in place in OpenMetrics mode; ours must survive a switch back.
    Object.defineProperty(metric, 'name', { enumerable: true, get: familyName, set () {} })
    register.registerMetric(metric)
    registered.push(name)
  }
  return () => {
    if (typeof register.removeSingleMetric !== 'function') return
    for (const n of registered) register.removeSingleMetric(n)
  }
}

module.exports = { toPrometheus, registerWithPromClient, families, CONTENT_TYPE, snapshotOf }
