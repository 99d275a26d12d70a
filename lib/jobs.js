'use strict'
/**
 * Full-sync / verify jobs (the scan itself runs in the Rust core) and their
 * schedule: SYNC_FULL_SYNC_CRON and SYNC_FULL_SYNC_ON_START.
 */

class Job {
  /**
   * @param {object} engine native engine
   * @param {string} id
   */
  constructor (engine, id) {
    this.id = id
    this._engine = engine
    this._done = null
    this._last = null
  }

  /** @returns {object} live progress (the last one seen once the engine is closed) */
  snapshot () {
    try {
      this._last = this._engine.jobSnapshot(this.id)
    } catch (e) {
      if (!this._last) throw e
    }
    return this._last
  }

  /** Stops the scan at the next document; repairs already queued still apply. */
  cancel () {
    this._engine.cancelJob(this.id)
  }

  /** @returns {Promise<object>} the final snapshot */
  get done () {
    if (!this._done) {
      this._done = this._engine.waitJob(this.id).then((snap) => {
        this._last = snap
        return snap
      })
    }
    return this._done
  }

  toJSON () {
    return this.snapshot()
  }
}

class JobRunner {
  /**
   * @param {() => object} engine returns the native engine (throws once closed)
   * @param {object} logger
   */
  constructor (engine, logger) {
    this._engine = engine
    this._logger = logger
    this._jobs = new Map()
    this._cron = null
    /** Scheduled ticks handled so far (observable by tests and the dashboard). */
    this.ticks = 0
  }

  /**
   * Starts a job, or returns the running one (one at a time).
   * @param {{collections?: string[], dryRun?: boolean, waitMs?: number}} opts waitMs: fail if
   *   the servers do not answer within it (default: wait for them as long as it takes)
   * @returns {Job}
   */
  start (opts = {}) {
    if (opts.collections !== undefined && (!Array.isArray(opts.collections) || opts.collections.some((c) => typeof c !== 'string' || !c))) {
      throw new TypeError('collections must be an array of collection names')
    }
    if (opts.waitMs !== undefined && !(Number.isFinite(opts.waitMs) && opts.waitMs >= 0)) {
      throw new TypeError(`waitMs must be a non-negative number of milliseconds, got ${String(opts.waitMs)}`)
    }
    const engine = this._engine()
    const id = engine.startJob({ collections: opts.collections || undefined, dryRun: Boolean(opts.dryRun), waitMs: opts.waitMs })
    let job = this._jobs.get(id)
    if (!job) {
      job = new Job(engine, id)
      this._jobs.set(id, job)
      // Keep the last few finished jobs addressable by id.
      while (this._jobs.size > 20) this._jobs.delete(this._jobs.keys().next().value)
      const snap = job.snapshot()
      this._logger.info(`${snap.kind === 'verify' ? 'verify' : 'full sync'} ${id} started (${snap.collectionsTotal || 'all'} collections)`)
      job.done.then((s) => {
        const line = `${s.kind === 'verify' ? 'verify' : 'full sync'} ${id} ${s.state}: ${s.docsScanned} documents scanned, ${s.differences} differences, ${s.repairsQueued} repairs queued${s.error ? ` (${s.error})` : ''}`
        if (s.state === 'failed') this._logger.error(line)
        else this._logger.info(line)
      }, () => {})
    }
    return job
  }

  /** @param {string} id */
  get (id) {
    return this._jobs.get(id)
  }

  /** Snapshot of the running job, or null. */
  current () {
    for (const job of this._jobs.values()) {
      try {
        const s = job.snapshot()
        if (s.state === 'running' || s.state === 'waiting') return s
      } catch { /* engine closed */ }
    }
    return null
  }

  /**
   * Runs a full sync on a cron schedule (never overlapping a running job).
   * @param {string} expression
   */
  schedule (expression) {
    const { Cron } = require('croner')
    let skippedFor = null
    this._cron = new Cron(expression, { protect: true, unref: true }, () => {
      // A tick must never throw: croner would surface it as an unhandled error.
      this.ticks++
      try {
        const running = this.current()
        if (running) {
          // Once per job: a per-second cron while Atlas is down would flood the log.
          if (skippedFor !== running.id) this._logger.warn(`scheduled full sync skipped: job ${running.id} is already ${running.state}${running.waitingFor ? ` (${running.waitingFor})` : ''}`)
          skippedFor = running.id
          return
        }
        this.start({})
      } catch (e) {
        this._logger.error(`scheduled full sync could not start: ${e && e.message ? e.message : e}`)
      }
    })
    this._logger.info(`full sync scheduled: "${expression}" (next ${this._cron.nextRun()?.toISOString()})`)
  }

  stop () {
    if (this._cron) this._cron.stop()
    this._cron = null
  }
}

/**
 * Validates a cron expression early so a typo fails createSync, not 3 AM.
 * @param {string} expression
 */
function validateCron (expression) {
  const { Cron } = require('croner')
  try {
    new Cron(expression, { paused: true }).stop()
  } catch (e) {
    const err = new Error(`Invalid SYNC_FULL_SYNC_CRON="${expression}": expected a cron expression like "0 3 * * *" (${e.message})`)
    err.code = 'ERR_SYNC_CONFIG'
    throw err
  }
}

module.exports = { Job, JobRunner, validateCron }
