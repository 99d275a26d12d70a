'use strict'
/** The Sync object returned by createSync(): JS façade over the native engine. */
const { EventEmitter } = require('node:events')
const { encodeOp } = require('./wire')
const { scrub } = require('./redact')
const { evaluateHealth } = require('./health')
const { JobRunner, validateCron } = require('./jobs')
const { describeScope } = require('./scope')
const { PendingPosts } = require('./postmarks')

let native = null
function loadNative () {
  if (!native) native = require('../native.js')
  return native
}

const CLOSED = 'ERR_SYNC_CLOSED'

// The binding's promises can only reject with a napi Status name: its async
// methods map the engine's code onto one of these (src/lib.rs `to_status`).
const STATUS_CODES = { Cancelled: CLOSED, InvalidArg: 'ERR_SYNC_INVALID' }

/** A native error as the app sees it: scrubbed, with the engine's `code`; invalid input is a TypeError. */
function wrapNativeError (e, secrets) {
  const msg = scrub(e && e.message ? e.message : String(e), secrets)
  const raw = e && typeof e.code === 'string' ? e.code : ''
  const code = raw.startsWith('ERR_') ? raw : STATUS_CODES[raw] || 'ERR_SYNC_ENGINE'
  const err = code === 'ERR_SYNC_INVALID' ? new TypeError(msg) : new Error(msg)
  err.code = code
  return err
}

class Sync extends EventEmitter {
  /**
   * @param {object} cfg resolved config (lib/config.js)
   * @param {ReturnType<import('./logger').createLogger>} logger
   */
  constructor (cfg, logger) {
    super()
    this.config = cfg
    this.logger = logger
    this.enabled = true
    this._secrets = [cfg.localUri, cfg.atlasUri]
    this._hookErrors = 0
    this._lastHookError = null
    this._lostAfterClose = 0
    this._lostAtClose = null
    this._invalidOps = 0
    this._healthState = null
    this._engine = null
    this._closing = null
    this._plugin = null
    /** @type {import('./ring').CaptureRing | null} marks written without a native call */
    this._ring = null
    // Post-write marks go into the ring at once, else wait for the next intent's native call (lib/postmarks.js).
    this._posts = new PendingPosts(
      (encoded) => this._captureEncoded(encoded),
      (err, ctx) => this._hookError(err, ctx),
      (encoded) => this._ring !== null && this._ringWrite(encoded)
    )
  }

  /** The Mongoose plugin: `mongoose.plugin(sync.plugin)` before models are compiled. */
  get plugin () {
    if (!this._plugin) this._plugin = this._makePlugin()
    return this._plugin
  }

  async _start () {
    const { NativeEngine } = loadNative()
    const c = this.config
    if (c.fullSyncCron) validateCron(c.fullSyncCron)
    // napi hands the (level, message) tuple over as one array argument.
    const log = (first, second) => {
      const [level, message] = Array.isArray(first) ? first : [first, second]
      this.logger.log(level, message)
    }
    const { nativeConfig, openWaitingForLock, LOCK_TIMEOUT } = require('./open')
    try {
      this._engine = await openWaitingForLock(() => new NativeEngine(nativeConfig(c), log), {
        waitMs: c.lockWaitMs, dataDir: c.dataDir, logger: this.logger
      })
    } catch (e) {
      if (e.code === LOCK_TIMEOUT) throw e
      throw wrapNativeError(e, this._secrets)
    }
    this._ring = require('./ring').attachRing(this._engine, c, this.logger)
    this._startAdopter(NativeEngine, log)
    this._jobs = new JobRunner(() => this._native(), this.logger)
    this.logger.info('✓ Sync system initialized')
    this.logger.info(describeScope(c))
    // Health is evaluated on a timer too, so 'alert' fires even when nobody polls.
    this._healthTimer = setInterval(() => {
      try { this.health() } catch { /* closed meanwhile */ }
    }, 5000)
    this._healthTimer.unref()
    if (c.fullSyncCron) this._jobs.schedule(c.fullSyncCron)
    const corrupt = this._engine.metrics().journal.corruptRecords
    if (corrupt > 0) {
      // The unreadable records named documents we can no longer identify:
      // compare everything instead, so nothing they carried is lost.
      this.logger.warn(`journal recovery skipped ${corrupt} unreadable record(s): starting a full sync to repair whatever they named`)
      this._jobs.start({})
    } else if (c.fullSyncOnStart) {
      this._jobs.start({})
    }
  }

  /** Drains sibling instance dirs nobody holds (lib/adopt.js). */
  _startAdopter (NativeEngine, log) {
    const c = this.config
    if (!c.persistQueue || c.adoptIntervalMs === 0) return
    const { Adopter } = require('./adopt')
    const { nativeConfig } = require('./open')
    this._adopter = new Adopter({
      root: c.dataRoot,
      self: c.dataDir,
      // Quieter than ours: a probe of an empty dir would log its start and close lines.
      open: (dir) => new NativeEngine({ ...nativeConfig(c, dir), logLevel: c.logLevel === 'error' ? 'error' : 'warn' }, log),
      enqueue: (encoded) => this._enqueueEncoded(encoded),
      logger: this.logger,
      sliceMs: Math.max(1000, Math.floor(c.lockWaitMs / 2))
    })
    // Not inside createSync: opening a sibling replays its journal from disk.
    setImmediate(() => this._adopter.tick())
    this._adoptTimer = setInterval(() => this._adopter.tick(), c.adoptIntervalMs)
    this._adoptTimer.unref()
  }

  _native () {
    if (!this._engine) {
      const err = new Error('the sync engine is closed')
      err.code = CLOSED
      throw err
    }
    return this._engine
  }

  _makePlugin () {
    const { createPlugin } = require('./plugin')
    const excluded = new Set(this.config.excludedCollections)
    return createPlugin({
      mark: (ops) => {
        const first = ops[0] || {}
        const ctx = { hook: 'mark', collection: first.collection, db: first.db, marks: ops.length }
        let encoded
        try {
          encoded = ops.map((op) => encodeOp(op, this.config.localDb))
        } catch (e) {
          this._hookError(e, ctx)
          return
        }
        // One hook's marks are all intents (pre-write) or all post/error marks (sink.js).
        if (first.intent === true) this._posts.sendWith(encoded, ctx)
        else this._posts.add(encoded, ctx)
      },
      isExcluded: (name) => excluded.has(name),
      onError: (err, ctx) => this._hookError(err, ctx),
      queryMarkCap: this.config.queryMarkCap,
      queryMarkTimeoutMs: this.config.queryMarkTimeoutMs
    })
  }

  /**
   * A capture that failed. Never silent: counted, logged, in health, and the
   * collection is queued for a reconcile (the engine remembers it when the
   * journal itself is what failed, and retries once it takes writes again).
   */
  _hookError (err, ctx = {}) {
    const msg = scrub(err && err.message ? err.message : String(err), this._secrets)
    if (err && err.code === CLOSED) {
      // Only after close() resolved (the process is exiting): nothing can keep it.
      this._lostAfterClose += ctx.marks || 1
      this.logger.error(`capture lost: the sync engine is closed (close() had already finished)${ctx.collection ? ` — collection ${ctx.collection}` : ''}; call close() only after the app stopped writing (handleSignals({ server }) does)`)
      return
    }
    this._hookErrors++
    this._lastHookError = { at: Date.now(), message: msg }
    const where = [ctx.hook, ctx.model].filter(Boolean).join(' on ')
    this.logger.error(`capture failed${where ? ` (${where})` : ''}; the app write was not affected: ${msg}`)
    // A journal failure is already remembered by the engine (lostMarks; it comes
    // back as ERR_SYNC_IO, ERR_SYNC_JOURNAL); any other failure leaves this write
    // unidentified: reconcile its collection. By code: a message can name a
    // collection called "journal…".
    const journalFailed = err && (err.code === 'ERR_SYNC_IO' || err.code === 'ERR_SYNC_JOURNAL')
    if (ctx.collection && ctx.db && !journalFailed) {
      try {
        this._enqueueEncoded([encodeOp({ collection: ctx.collection, db: ctx.db, kind: 'collection' }, this.config.localDb)])
        this.logger.warn(`reconcile of collection ${ctx.collection} queued to repair the failed capture`)
      } catch (e) {
        this.logger.error(`queueing a reconcile of ${ctx.collection} failed: ${scrub(e && e.message ? e.message : String(e), this._secrets)}`)
      }
    }
  }

  /**
   * The plugin's marks: written into the capture ring (lib/ring.js), else by call. A mark that
   * reaches the engine through the ring and cannot be journaled there is remembered by the
   * engine like one refused by call (lostMarks, health, the collection reconciled), but does not
   * throw here: the plugin never throws into the app's write anyway.
   */
  _captureEncoded (encoded) {
    if (encoded.length === 0) return 0
    if (this._ring !== null && this._ringWrite(encoded)) return encoded.length
    const n = this._enqueueEncoded(encoded)
    // Accepted by call: the engine checked these names, later marks of them may use the ring.
    if (this._ring !== null) this._ring.learn(encoded)
    return n
  }

  /**
   * Marks into the capture ring when it takes them all (nothing is published otherwise: the
   * caller sends them by call). Never throws: a value the ring cannot hold goes by call, where
   * it gets its coded error.
   */
  _ringWrite (encoded) {
    try {
      return this._ring.write(encoded)
    } catch {
      return false
    }
  }

  /** Marks by call: journaled before this returns, or a coded error (`enqueue()` promises that). */
  _enqueueEncoded (encoded) {
    if (encoded.length === 0) return 0
    try {
      // Positional arguments: no objects or array for the addon to read back (the common
      // cases: one mark, or a write's intent with the previous write's post mark).
      if (encoded.length === 1) {
        const e = encoded[0]
        return this._native().enqueueOne(e.c, e.d, e.k, e.v, e.i)
      }
      if (encoded.length === 2) {
        const [a, b] = encoded
        return this._native().enqueueTwo(a.c, a.d, a.k, a.v, a.i, b.c, b.d, b.k, b.v, b.i)
      }
      return this._native().enqueue(encoded)
    } catch (e) {
      throw wrapNativeError(e, this._secrets)
    }
  }

  /**
   * Marks documents written outside Mongoose. Valid ops are journaled even
   * when others in the same array are invalid; the TypeError lists those.
   * @param {object|object[]} ops
   * @returns {number} ops accepted
   */
  enqueue (ops) {
    if (!Array.isArray(ops)) return this._enqueueOne(ops)
    const encoded = []
    const problems = []
    ops.forEach((op, i) => {
      try {
        encoded.push(encodeOp(op, this.config.localDb))
      } catch (e) {
        problems.push(`[${i}] ${e.message}`)
      }
    })
    const n = this._enqueueEncoded(encoded)
    this._invalidOps += problems.length
    if (problems.length) throw new TypeError(problems.join('\n'))
    return n
  }

  /** One op, passed to the addon as arguments (the common, hot case of enqueue). */
  _enqueueOne (op) {
    let e
    try {
      e = encodeOp(op, this.config.localDb)
    } catch (err) {
      this._invalidOps++
      throw err
    }
    try {
      return this._native().enqueueOne(e.c, e.d, e.k, e.v, e.i)
    } catch (err) {
      throw wrapNativeError(err, this._secrets)
    }
  }

  /** @returns {object} metrics snapshot */
  metrics () {
    const engine = this._native()
    this._posts.flush() // the counts include every capture made so far
    const m = engine.metrics()
    // close() has started: it drains whatever the engine says (running or paused).
    if (this._closing && m.state !== 'closed') m.state = 'closing'
    m.hookErrors = this._hookErrors
    m.lastHookError = this._lastHookError ? { at: new Date(this._lastHookError.at).toISOString(), message: this._lastHookError.message } : null
    m.invalidOps = (m.invalidOps || 0) + this._invalidOps
    m.captureRing = this._ring !== null
    m.fullSync = this._jobs ? this._jobs.current() : null
    return m
  }

  /** @returns {{status: string, reasons: string[], checkedAt: string}} */
  health () {
    if (!this._engine) {
      const reasons = ['sync engine is closed']
      if (this._lostAfterClose) reasons.push(`${this._lostAfterClose} capture(s) made after close() finished were lost`)
      const lost = this._lostAtClose
      if (lost) reasons.push(`${lost.count} mark(s) could not be journaled and the reconcile of ${lost.reconcilePending.join(', ')} could not be journaled at close either: run a full sync of them after the next start`)
      return { status: 'unhealthy', reasons, checkedAt: new Date().toISOString() }
    }
    const h = evaluateHealth(this.metrics(), this.config)
    if (this._healthState !== null && this._healthState !== h.status) {
      const alert = { from: this._healthState, to: h.status, reasons: h.reasons, at: h.checkedAt }
      const line = `sync health ${alert.from} → ${alert.to}${h.reasons.length ? `: ${h.reasons.join('; ')}` : ''}`
      if (h.status === 'healthy') this.logger.info(line)
      else this.logger.warn(line)
      this.emit('alert', alert)
    }
    this._healthState = h.status
    return h
  }

  /**
   * Resolves true once every op enqueued before the call is on Atlas (or dead-lettered).
   * @param {{timeoutMs?: number}} [opts]
   */
  async flush ({ timeoutMs = 30000 } = {}) {
    const engine = this._native()
    this._posts.flush()
    return engine.flush(timeoutMs).catch((e) => { throw wrapNativeError(e, this._secrets) })
  }

  /**
   * Opt-in graceful shutdown on SIGINT/SIGTERM and PM2's 'shutdown' message:
   * stop the HTTP server(s), wait for writes in progress, close (drain), exit.
   * See lib/shutdown.js.
   * @param {import('./shutdown').ShutdownOptions} [opts]
   * @returns {() => void} removes the handlers
   */
  handleSignals (opts) {
    return require('./shutdown').handleSignals(this, opts)
  }

  /**
   * Resolves once no capture hook is running (bounded), so writes in progress
   * are marked before the engine closes.
   * @param {number} timeoutMs
   * @returns {Promise<boolean>} false when the wait gave up
   */
  async writesSettled (timeoutMs) {
    return this._plugin ? this._plugin.settled(timeoutMs) : true
  }

  /**
   * Starts a full sync (verify + repair through the queue), or returns the running job.
   * Accepted while a server is unreachable: the job waits (state `waiting`).
   * @param {{collections?: string[], dryRun?: boolean, waitMs?: number}} [opts] waitMs: fail
   *   instead if the servers do not answer within it
   * @returns {import('./jobs').Job}
   */
  fullSync (opts = {}) {
    return this._jobs.start({ collections: opts.collections, dryRun: Boolean(opts.dryRun), waitMs: opts.waitMs })
  }

  /**
   * Starts a verification (report only), or returns the running job.
   * @param {{collections?: string[], waitMs?: number}} [opts]
   */
  verify (opts = {}) {
    return this._jobs.start({ collections: opts.collections, dryRun: true, waitMs: opts.waitMs })
  }

  /** @param {string} id @returns {import('./jobs').Job|undefined} */
  job (id) {
    return this._jobs ? this._jobs.get(id) : undefined
  }

  /**
   * The admin Express router (see docs/HTTP_API.md).
   * @param {object} [opts]
   */
  router (opts) {
    return require('./router').createRouter(this, opts)
  }

  /** Stops draining; marks keep being journaled. */
  pause () { this._native().pause() }
  /** Continues draining. */
  resume () { this._native().resume() }

  /** @param {{collection?: string, code?: number}} [filter] */
  deadLetters (filter) { return this._native().deadLetters(filter || null) }
  /** @param {{collection?: string, code?: number}} [filter] @returns {number} re-queued */
  retryDeadLetters (filter) { return this._native().retryDeadLetters(filter || null) }

  /**
   * Drains up to drainTimeoutMs, then stops; the rest stays in the journal.
   * @param {{drainTimeoutMs?: number}} [opts]
   * @returns {Promise<boolean>} whether everything was drained
   */
  close ({ drainTimeoutMs = this.config.shutdownDrainMs } = {}) {
    if (this._closing) return this._closing
    const engine = this._engine
    if (!engine) return Promise.resolve(true)
    if (this._jobs) this._jobs.stop()
    if (this._healthTimer) clearInterval(this._healthTimer)
    if (this._adoptTimer) clearInterval(this._adoptTimer)
    const adopter = this._adopter
    // The engine stays open while it drains: captures made meanwhile are
    // journaled (sent now, or after the next start). Only once it is closed
    // does enqueue throw ERR_SYNC_CLOSED.
    this._posts.flush() // while the engine takes marks; later ones go while it drains
    // From here every mark is a call: the engine reads the ring for the last time as it
    // closes, and a mark written there after that would be lost without a word.
    this._ring = null
    this._closing = (async () => {
      // A sibling's engine that fails to close must not keep ours from draining; its
      // journal stays on disk and is adopted again after the next start.
      if (adopter) {
        await adopter.stop().catch((e) => {
          this.logger.error(`closing the adopted instance's engine failed (its journal stays for the next start): ${scrub(e && e.message ? e.message : String(e), this._secrets)}`)
        })
      }
      return engine.close(drainTimeoutMs)
    })().then(({ drained, lostMarks }) => {
      this._lostAtClose = lostMarks && lostMarks.reconcilePending.length > 0 ? lostMarks : null
      this._engine = null
      this.emit('close', { drained })
      return drained
    }, (e) => {
      this._engine = null
      throw wrapNativeError(e, this._secrets)
    })
    return this._closing
  }
}

/** What createSync returns when SYNC_ENABLED=false: every call is a cheap no-op. */
class DisabledSync extends EventEmitter {
  constructor (cfg) {
    super()
    this.config = cfg
    this.enabled = false
    this.plugin = function dualsyncPlugin () {}
  }

  enqueue () { return 0 }
  metrics () { return { enabled: false, state: 'disabled' } }
  health () { return { status: 'disabled', reasons: ['sync disabled by configuration'], checkedAt: new Date().toISOString() } }
  async flush () { return true }
  async close () { return true }
  pause () {}
  resume () {}
  handleSignals () { return () => {} }
  async writesSettled () { return true }
  deadLetters () { return [] }
  retryDeadLetters () { return 0 }
  fullSync () { throw new Error('sync is disabled (SYNC_ENABLED=false): no full sync to run') }
  verify () { throw new Error('sync is disabled (SYNC_ENABLED=false): nothing to verify') }
  job () { return undefined }
  router (opts) { return require('./router').createRouter(this, opts) }
}

module.exports = { Sync, DisabledSync }
