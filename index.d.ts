// Public API of dualsync. Hand-written; the generated native loader types
// live in native.d.ts and are internal.
import type { EventEmitter } from 'node:events'

/** Options for createSync(). Each overrides the env var named in its doc. */
export interface SyncOptions {
  /** `SYNC_ENABLED` (default false). When false nothing is registered and every call is a no-op. */
  enabled?: boolean
  /** `MONGODB_LOCAL_URI`: the local (primary) database the app writes to. Required when enabled. */
  localUri?: string
  /** `MONGODB_ATLAS_URI`: the Atlas copy. Required when enabled. */
  atlasUri?: string
  /** Database name marks default to (default: the local URI's path, else "test"). */
  localDb?: string
  /** Atlas database receiving `localDb` (default: the Atlas URI's path, else localDb). */
  atlasDb?: string
  /** `SYNC_QUEUE_MAX_SIZE` (10000): marks kept in memory; the rest wait in the journal on disk. */
  queueMaxSize?: number
  /** `SYNC_WORKER_INTERVAL` ms (100): longest a write waits for its batch to fill; 0 = send at once. */
  workerInterval?: number
  /** `SYNC_MAX_RETRIES` (5): attempts for a document Atlas refuses before it goes to dead letters. */
  maxRetries?: number
  /** `SYNC_PERSIST_QUEUE` (true): journal marks to disk so they survive crashes. */
  persistQueue?: boolean
  /** `SYNC_BATCH_SIZE` (100): documents per Atlas write command. */
  batchSize?: number
  /** `SYNC_EXCLUDED_COLLECTIONS` (comma list): collections never synced. */
  excludedCollections?: string[] | string
  /**
   * `SYNC_SCOPE` (none): which documents this installation owns, per collection name or `'*'`
   * (every other collection): a MongoDB filter not on `_id`, e.g. `{ '*': { organization: orgId } }`,
   * or the env form as a string (Extended JSON: `{"*": {"organization": {"$oid": "…"}}}`).
   * Scans, re-reads and Atlas writes stay inside it. `null` ignores the env var.
   */
  scope?: Record<string, Record<string, unknown>> | string | null
  /**
   * `SYNC_EXTRAS_POLICY` ('report'): what a full sync does with in-scope documents only Atlas has:
   * `'report'` lists them and touches nothing, `'delete'` deletes them (pure mirror). One policy, or
   * per collection / `'*'`. `null` ignores the env var.
   */
  extrasPolicy?: ExtrasPolicy | Record<string, ExtrasPolicy> | string | null
  /** `SYNC_DATA_DIR` (./.dualsync; `/instance-N` appended under PM2 cluster mode). */
  dataDir?: string
  /** `SYNC_FSYNC_INTERVAL_MS` (1000): journal fsync period; bounds what a power loss can take. 0 = fsync every enqueue. */
  fsyncIntervalMs?: number
  /** `SYNC_CONCURRENCY` (4): batches in flight at once (each document always in the same lane). */
  concurrency?: number
  /** `SYNC_LOG_LEVEL` (info): debug | info | warn | error. */
  logLevel?: 'debug' | 'info' | 'warn' | 'error'
  /** Any object with debug/info/warn/error (console, pino, winston). Default: console. */
  logger?: Logger
  /** `SYNC_ADMIN_TOKEN`: bearer token for the admin router. */
  adminToken?: string
  /** `SYNC_FULL_SYNC_CRON`: cron expression for scheduled full syncs (e.g. "0 3 * * *"). */
  fullSyncCron?: string
  /** `SYNC_FULL_SYNC_ON_START` (false): run a full sync once at start-up. */
  fullSyncOnStart?: boolean
  /** `SYNC_QUERY_MARK_CAP` (10000): above this many matched documents a query write marks its whole collection for reconcile. */
  queryMarkCap?: number
  /** SYNC_QUERY_MARK_TIMEOUT_MS: maxTimeMS of the plugin's `_id`-only lookup; on timeout the collection is marked instead (default 5000). */
  queryMarkTimeoutMs?: number
  /** `SYNC_CONNECT_TIMEOUT_MS` (10000): server selection / connect timeout for both sides. */
  connectTimeoutMs?: number
  /** `SYNC_BACKOFF_MIN_MS` (100) and `SYNC_BACKOFF_MAX_MS` (30000): retry backoff bounds. */
  backoffMinMs?: number
  backoffMaxMs?: number
  /** `SYNC_SHUTDOWN_DRAIN_MS` (5000): default drain time of close(). */
  shutdownDrainMs?: number
  /** `SYNC_LOCK_WAIT_MS` (shutdownDrainMs + 10000): how long createSync waits for another process to release the data dir (pm2 reload) before rejecting with code `ERR_SYNC_LOCK_TIMEOUT`. */
  lockWaitMs?: number
  /** `SYNC_ADOPT_INTERVAL_MS` (30000): how often sibling `instance-N` dirs nobody holds are drained; 0 = never. */
  adoptIntervalMs?: number
  /** `SYNC_VERIFY_AFTER_ACK` (true when NODE_APP_INSTANCE is set): re-read acknowledged documents and resend what another process changed meanwhile. */
  verifyAfterAck?: boolean
  /** `SYNC_LOCAL_READ_LIMIT` (32): most reads of local the drain runs at once (a `$in` read of a batch counts one, a point read one). */
  localReadLimit?: number
  /** `SYNC_LOCAL_READ_ADAPTIVE` (true): lower that limit, down to 1, while local reads cost more than when the server is idle, so the drain yields to the app. */
  localReadAdaptive?: boolean
  /** `SYNC_DRAIN_SHARE` (0.03): while the app writes (a mark captured in the last 250 ms), the drain reads local one batch at a time, keeps pace with the documents the app writes, and gives the backlog only this share of the time; 1 never holds it back. A `flush()` or close drains at full speed. 0.01 – 1. */
  drainShare?: number
  /** `SYNC_CAPTURE_RING` (true): the plugin writes its marks into a file the engine maps shared (no native call per write; survives `kill -9` like the journal); false: a native call per write. Off by itself with `fsyncIntervalMs: 0` and where the runtime cannot share memory with the addon (Electron). */
  captureRing?: boolean
  /** Health thresholds: `SYNC_HEALTH_MAX_BACKLOG` (1000), `SYNC_HEALTH_MAX_FAILURE_RATE` (0.05), `SYNC_HEALTH_MAX_LAG_MS` (60000), `SYNC_HEALTH_MAX_DEAD_LETTERS` (0), `SYNC_HEALTH_ATLAS_DOWN_MS` (300000). */
  healthMaxBacklog?: number
  healthMaxFailureRate?: number
  healthMaxLagMs?: number
  healthMaxDeadLetters?: number
  healthAtlasDownMs?: number
}

export type ExtrasPolicy = 'report' | 'delete'

export interface Logger {
  debug?(message: string): void
  info?(message: string): void
  warn?(message: string): void
  error?(message: string): void
}

/** A write made outside Mongoose: which document changed. */
export interface SyncOp {
  collection: string
  /** The document's _id: ObjectId, string, number, bigint/Long, Date, or any BSON-encodable value. */
  id?: unknown
  /** Database (default: the local URI's database). */
  db?: string
  /** 'collection' = reconcile the whole collection instead of one document. */
  kind?: 'document' | 'collection'
  /**
   * An intent: the op is taken *before* the write it announces. The engine holds it until a later
   * op of the same document (or collection) arrives, or 30 s pass, so it never reads too early.
   */
  intent?: boolean
}

export interface Percentiles { count: number; p50: number; p95: number; p99: number; max: number; sum: number }

export interface Metrics {
  enabled: boolean
  /** `closing`: close() is draining (marks are still journaled). */
  state: 'running' | 'paused' | 'closing' | 'closed' | 'disabled'
  enqueued: number
  coalesced: number
  applied: { upserts: number; deletes: number; total: number }
  batches: number
  retries: number
  failures: { transient: number; permanent: number; batches: number }
  /** Documents moved to dead letters since start. */
  deadLettered: number
  /** Dead letters currently stored. */
  deadLetters: number
  invalidOps: number
  /** Whether marks go through the capture ring (false: a native call per mark; see `captureRing` in the options). */
  captureRing: boolean
  /** Acknowledged documents sent again because local changed meanwhile (SYNC_VERIFY_AFTER_ACK). */
  verifyResends: number
  /** Successful batches / all batch attempts (0..1). */
  /** Succeeded / all batch attempts of the last 5 minutes (1 when there were none). Lifetime counts: `batches`, `failures.batches`. */
  successRate: number
  /** Reads of local the drain may run at once now (1..SYNC_LOCAL_READ_LIMIT; lower while the app keeps the local server busy). */
  localReadLimit: number
  /** Share of the time the drain kept to at its last local read: `drainShare` while the app was writing, else 1. */
  drainShare: number
  throughput: { appliedPerSec: number }
  applyLatencyMs: Percentiles
  /** End-to-end lag: enqueue → acknowledged by Atlas. */
  lagMs: Percentiles
  atlas: { connected: boolean; since: string | null; lastSuccessAt: string | null; lastError: string | null }
  /** Last failure to read local (`null` after a success); does not change `atlas.connected`. */
  local: { lastError: string | null }
  /** Collection scans (from collection marks): per collection one runs and at most one waits; `coalesced`: marks folded into a waiting scan. */
  collectionScans: { started: number; coalesced: number; running: number; waiting: number }
  collections: Record<string, { enqueued: number; upserts: number; deletes: number; failures: number }>
  uptimeMs: number
  backlog: { total: number; memory: number; disk: number; inFlight: number }
  oldestPendingAgeMs: number | null
  journal: { persist: boolean; bytes: number; segments: number; corruptRecords: number; recovered: number; checkpoint: number; end: number }
  /** Failures inside capture hooks (counted, logged, never thrown into the app); the collection is queued for a reconcile. */
  hookErrors: number
  /** The last capture hook failure (keeps health degraded for 5 minutes). */
  lastHookError: { at: string; message: string } | null
  /** Marks that could not be journaled (full disk, broken journal). `reconcilePending`: collections ("db.coll") whose reconcile is queued as soon as the journal takes writes again (kept in memory only). */
  lostMarks: { count: number; reconcilePending: string[]; lastError: string | null }
  fullSync: JobSnapshot | null
  scope: {
    /** Per collection named in the configuration, and `'*'` for the rest. `scope: null` = every document. */
    rules: Record<string, { scope: Record<string, unknown> | null; extrasPolicy: ExtrasPolicy }>
    /** Extras full syncs and collection reconciles left in place (`report`) since start. */
    extrasReported: number
    /** Extras full syncs and collection reconciles queued for deletion (`delete`) since start. */
    extrasDeleted: number
  }
}

export interface Health {
  status: 'healthy' | 'degraded' | 'unhealthy' | 'disabled'
  reasons: string[]
  checkedAt: string
}

export interface Alert { from: Health['status']; to: Health['status']; reasons: string[]; at: string }

export interface DeadLetter {
  db: string
  collection: string
  /** Canonical extended JSON of the _id. */
  id: unknown
  code: number | null
  message: string
  attempts: number
  firstFailedAt: string
  lastFailedAt: string
}

export interface DeadLetterFilter { collection?: string; code?: number }

export interface CollectionReport {
  collection: string
  localCount: number
  atlasCount: number
  missingOnAtlas: number
  extraOnAtlas: number
  different: number
  samplesMissing: unknown[]
  samplesExtra: unknown[]
  samplesDifferent: unknown[]
  cancelled: boolean
  /** The collection's scope (relaxed Extended JSON); `null` = every document. Counts cover only it. */
  scope: Record<string, unknown> | null
  extrasPolicy: ExtrasPolicy
  /** Extras listed and left on Atlas (`report`). */
  extrasReported: number
  /** Extras this full sync queued for deletion (`delete`; 0 in a verify). */
  extrasDeleted: number
}

export interface JobSnapshot {
  id: string
  kind: 'verify' | 'fullSync'
  /** `waiting`: accepted, waiting for local and Atlas to answer (see `waitingFor`). */
  state: 'waiting' | 'running' | 'done' | 'cancelled' | 'failed'
  /** While waiting: why (e.g. "MongoDB Atlas not reachable: …"), credentials redacted. */
  waitingFor: string | null
  startedAt: string
  finishedAt: string | null
  collectionsTotal: number
  collectionsDone: number
  currentCollection: string | null
  docsScanned: number
  docsEstimated: number
  ratePerSec: number
  etaMs: number | null
  differences: number
  repairsQueued: number
  error: string | null
  reports: CollectionReport[]
}

export interface Job {
  readonly id: string
  snapshot(): JobSnapshot
  cancel(): void
  /** Resolves with the final snapshot. */
  readonly done: Promise<JobSnapshot>
}

export interface FullSyncOptions {
  /** Collections to scan (default: every local collection except system.*, excluded and dualsync's own). */
  collections?: string[]
  /** Report only; repair nothing. */
  dryRun?: boolean
  /** Fail (state `failed`, with the reason) if local or Atlas does not answer within this many ms (0: one attempt). Default: wait in state `waiting` as long as it takes. */
  waitMs?: number
}

export interface RouterOptions {
  /** Bearer token (default: SYNC_ADMIN_TOKEN). */
  token?: string
  /** The app's own auth middleware instead of a token. */
  auth?: (req: unknown, res: unknown, next: (err?: unknown) => void) => void
  /** Also serve GET /health/public (status only) without auth. */
  publicHealth?: boolean
  /** The app's express module, if it cannot be resolved from the app directory. */
  express?: unknown
}

export interface ShutdownOptions {
  /** Default ['SIGINT', 'SIGTERM']. */
  signals?: string[]
  /** HTTP server(s) to stop first: no new connections, requests in flight finish (bounded). */
  server?: unknown | unknown[]
  /** Bound on waiting for requests in flight and for capture hooks (default 10000). */
  serverCloseTimeoutMs?: number
  /** Passed to close() (default SYNC_SHUTDOWN_DRAIN_MS). */
  drainTimeoutMs?: number
  /** React to PM2's `'shutdown'` IPC message too (default true; only when there is an IPC channel). */
  pm2Message?: boolean
  /** Runs after the server stopped, before the drain: stop the app's own background writers. */
  beforeClose?: () => Promise<void> | void
  /** Runs after the drain (e.g. `mongoose.disconnect()`). */
  beforeExit?: () => Promise<void> | void
  /** Call process.exit when done (default true). */
  exit?: boolean
}

export interface Sync extends EventEmitter {
  readonly enabled: boolean
  /** Mongoose plugin: `mongoose.plugin(sync.plugin)` before models are compiled. */
  readonly plugin: (schema: unknown, options?: unknown) => void
  /** Marks documents written outside Mongoose. Synchronous; returns how many ops were accepted. Throws TypeError on bad input (valid ops in the same array are still accepted). */
  enqueue(op: SyncOp | SyncOp[]): number
  metrics(): Metrics
  health(): Health
  /** True once every op enqueued before the call is applied on Atlas (or dead-lettered); false on timeout (default 30 s). Waits for Mongoose writes in progress to finish (do not await it inside a write's own middleware). */
  flush(opts?: { timeoutMs?: number }): Promise<boolean>
  /** Drains up to drainTimeoutMs (default SYNC_SHUTDOWN_DRAIN_MS), then stops; the rest stays in the journal. Resolves whether all was drained. Marks captured while it drains are journaled; afterwards enqueue throws an Error with `code: 'ERR_SYNC_CLOSED'`. Repeated calls return the same promise. */
  close(opts?: { drainTimeoutMs?: number }): Promise<boolean>
  /** Resolves true once no capture hook is running; false if some still are after timeoutMs. */
  writesSettled(timeoutMs: number): Promise<boolean>
  pause(): void
  resume(): void
  deadLetters(filter?: DeadLetterFilter): DeadLetter[]
  /** Re-queues matching dead letters; returns how many. */
  retryDeadLetters(filter?: DeadLetterFilter): number
  /** Starts (or returns the running) full sync: verify + repair through the normal queue. */
  fullSync(opts?: FullSyncOptions): Job
  /** Starts (or returns the running) verification job: a report, no repair. */
  verify(opts?: Omit<FullSyncOptions, 'dryRun'>): Job
  /** A job by id (the running or the last finished ones). */
  job(id: string): Job | undefined
  /** Express router with the admin API and dashboard. */
  router(opts?: RouterOptions): unknown
  /** Opt-in graceful shutdown (SIGINT/SIGTERM, PM2's 'shutdown' message): stop the server(s), wait for captures in progress, close (drain), exit. Returns a function that removes the handlers. */
  handleSignals(opts?: ShutdownOptions): () => void
  on(event: 'alert', listener: (alert: Alert) => void): this
  on(event: 'close', listener: (info: { drained: boolean }) => void): this
}

export class ConfigError extends Error {
  code: 'ERR_SYNC_CONFIG'
}

/**
 * The `code` of errors from the engine: `ERR_SYNC_CLOSED` (after close), `ERR_SYNC_INVALID` (bad
 * input; thrown as a TypeError), `ERR_SYNC_JOURNAL` (journal unreadable or unwritable),
 * `ERR_SYNC_LOCKED` (the data dir is held by another process), `ERR_SYNC_LOCK_TIMEOUT` (createSync
 * waited SYNC_LOCK_WAIT_MS for that process to exit), `ERR_SYNC_IO` (dead-letter store; a mark that
 * could not be journaled), `ERR_SYNC_ENGINE` (anything else), `ERR_SYNC_NO_BINARY` (createSync of an
 * enabled sync: no native binary loads on this platform; the message names what was tried).
 */
export type SyncErrorCode = 'ERR_SYNC_CLOSED' | 'ERR_SYNC_INVALID' | 'ERR_SYNC_JOURNAL' | 'ERR_SYNC_LOCKED' | 'ERR_SYNC_LOCK_TIMEOUT' | 'ERR_SYNC_IO' | 'ERR_SYNC_ENGINE' | 'ERR_SYNC_NO_BINARY'

/** Creates the sync engine from env vars and options (a no-op Sync when disabled). */
export function createSync(options?: SyncOptions): Promise<Sync>
