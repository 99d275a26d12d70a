'use strict'
/**
 * Opening the native engine on a data dir. The data-dir lock is the arbiter
 * between processes: during `pm2 reload` the new worker starts while the old
 * one (same NODE_APP_INSTANCE, same dir) is still draining, so a refused lock
 * is retried on a timer — never by blocking the event loop — until the holder
 * exits or SYNC_LOCK_WAIT_MS passes.
 */

const { nativeScopeRules } = require('./scope')

const LOCKED = 'ERR_SYNC_LOCKED'
const LOCK_TIMEOUT = 'ERR_SYNC_LOCK_TIMEOUT'

/**
 * Engine options for the addon from the resolved config.
 * @param {object} c resolved config (lib/config.js)
 * @param {string} [dataDir] another instance's dir (adoption); defaults to ours
 * @returns {object}
 */
function nativeConfig (c, dataDir = c.dataDir) {
  return {
    localUri: c.localUri,
    atlasUri: c.atlasUri,
    localDb: c.localDb,
    atlasDb: c.atlasDb,
    dataDir,
    persistQueue: c.persistQueue,
    fsyncIntervalMs: c.fsyncIntervalMs,
    queueMaxSize: c.queueMaxSize,
    batchSize: c.batchSize,
    workerIntervalMs: c.workerInterval,
    concurrency: c.concurrency,
    maxRetries: c.maxRetries,
    excludedCollections: c.excludedCollections,
    backoffMinMs: c.backoffMinMs,
    backoffMaxMs: c.backoffMaxMs,
    connectTimeoutMs: c.connectTimeoutMs,
    logLevel: c.logLevel,
    verifyAfterAck: c.verifyAfterAck,
    localReadLimit: c.localReadLimit,
    localReadAdaptive: c.localReadAdaptive,
    drainShare: c.drainShare,
    captureRing: c.captureRing,
    scopeRules: nativeScopeRules(c)
  }
}

/** True when the addon refused because another process holds the dir. */
function isLocked (e) {
  return Boolean(e && e.code === LOCKED)
}

/** The holder as the LOCK file names it, from the addon's message. */
function holderOf (e) {
  const m = / is in use by (.*?); each process/.exec(e.message)
  return m ? m[1] : 'another process'
}

/**
 * Opens the engine, waiting (asynchronously, bounded by `waitMs`) while
 * another process holds the data dir. Each attempt takes the lock without
 * waiting; recovery of the journal is local disk work only.
 * @param {() => object} open creates the NativeEngine (throws when locked)
 * @param {{waitMs: number, dataDir: string, logger: {warn: Function, info: Function}}} opts
 * @returns {Promise<object>} the engine
 */
async function openWaitingForLock (open, { waitMs, dataDir, logger }) {
  const started = Date.now()
  let delay = 50
  let warned = false
  for (;;) {
    try {
      const engine = open()
      if (warned) logger.info(`✓ data dir ${dataDir} taken over after ${Date.now() - started} ms of waiting`)
      return engine
    } catch (e) {
      if (!isLocked(e)) throw e
      const waited = Date.now() - started
      if (waited >= waitMs) {
        const err = new Error(`data dir ${dataDir} is still in use by ${holderOf(e)} after waiting ${waited} ms (SYNC_LOCK_WAIT_MS=${waitMs}); each running process needs its own data dir (PM2 cluster instances get one each from NODE_APP_INSTANCE)`)
        err.code = LOCK_TIMEOUT
        throw err
      }
      if (!warned) {
        warned = true
        logger.warn(`data dir ${dataDir} is held by ${holderOf(e)}: waiting up to ${waitMs} ms for it to exit (a reload's previous instance draining?)`)
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(delay, waitMs - waited)))
      delay = Math.min(delay * 2, 1000)
    }
  }
}

module.exports = { nativeConfig, openWaitingForLock, isLocked, LOCKED, LOCK_TIMEOUT }
