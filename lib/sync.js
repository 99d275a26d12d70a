'use strict'
/** The Sync object returned by createSync(): JS façade over the native engine. */
const { EventEmitter } = require('node:events')
const { encodeOp } = require('./ids')
const { scrub } = require('./redact')
const { evaluateHealth } = require('./health')
const { JobRunner, validateCron } = require('./jobs')

let native = null
function loadNative () {
  if (!native) native = require('../native.js')
  return native
}

const CLOSED = 'ERR_SYNC_CLOSED'

function wrapNativeError (e, secrets) {
  const msg = scrub(e && e.message ? e.message : String(e), secrets)
  if (e && e.code === 'InvalidArg') return new TypeError(msg)
  const err = new Error(msg)
  if (msg.includes(CLOSED)) err.code = CLOSED
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
    this._invalidOps = 0
    this._healthState = null
    this._engine = null
    this._plugin = null
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
    this._startAdopter(NativeEngine, log)
    this._jobs = new JobRunner(() => this._native(), this.logger)
    this.logger.info('✓ Sync system initialized')
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
        try {
          this._enqueueEncoded(ops.map((op) => encodeOp(op, this.config.localDb)))
        } catch (e) {
          this._hookError(e, { hook: 'mark' })
        }
      },
      isExcluded: (name) => excluded.has(name),
      onError: (err, ctx) => this._hookError(err, ctx),
      queryMarkCap: this.config.queryMarkCap
    })
  }

  _hookError (err, ctx = {}) {
    this._hookErrors++
    const where = [ctx.hook, ctx.model].filter(Boolean).join(' on ')
    this.logger.error(`capture failed${where ? ` (${where})` : ''}; the app write was not affected: ${err && err.message ? err.message : err}`)
  }

  _enqueueEncoded (encoded) {
    if (encoded.length === 0) return 0
    try {
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
      return this._native().enqueueOne(e.c, e.d, e.k, e.v, e.p)
    } catch (err) {
      throw wrapNativeError(err, this._secrets)
    }
  }

  /** @returns {object} metrics snapshot */
  metrics () {
    const m = this._native().metrics()
    m.hookErrors = this._hookErrors
    m.invalidOps = (m.invalidOps || 0) + this._invalidOps
    m.fullSync = this._jobs ? this._jobs.current() : null
    return m
  }

  /** @returns {{status: string, reasons: string[], checkedAt: string}} */
  health () {
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
    return this._native().flush(timeoutMs)
  }

  /**
   * Opt-in SIGINT/SIGTERM handling: close (drain) then exit. See lib/shutdown.js.
   * @param {{signals?: string[], drainTimeoutMs?: number, exit?: boolean}} [opts]
   * @returns {() => void} removes the handlers
   */
  handleSignals (opts) {
    return require('./shutdown').handleSignals(this, opts)
  }

  /**
   * Starts a full sync (verify + repair through the queue), or returns the running job.
   * @param {{collections?: string[], dryRun?: boolean}} [opts]
   * @returns {import('./jobs').Job}
   */
  fullSync (opts = {}) {
    return this._jobs.start({ collections: opts.collections, dryRun: Boolean(opts.dryRun) })
  }

  /**
   * Starts a verification (report only), or returns the running job.
   * @param {{collections?: string[]}} [opts]
   */
  verify (opts = {}) {
    return this._jobs.start({ collections: opts.collections, dryRun: true })
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
  async close ({ drainTimeoutMs = this.config.shutdownDrainMs } = {}) {
    const engine = this._engine
    if (!engine) return true
    this._engine = null
    if (this._jobs) this._jobs.stop()
    if (this._healthTimer) clearInterval(this._healthTimer)
    if (this._adoptTimer) clearInterval(this._adoptTimer)
    if (this._adopter) await this._adopter.stop()
    const drained = await engine.close(drainTimeoutMs)
    this.emit('close', { drained })
    return drained
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
  deadLetters () { return [] }
  retryDeadLetters () { return 0 }
  fullSync () { throw new Error('sync is disabled (SYNC_ENABLED=false): no full sync to run') }
  verify () { throw new Error('sync is disabled (SYNC_ENABLED=false): nothing to verify') }
  job () { return undefined }
  router (opts) { return require('./router').createRouter(this, opts) }
}

module.exports = { Sync, DisabledSync }
