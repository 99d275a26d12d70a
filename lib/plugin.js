'use strict'
// The Mongoose capture plugin: marks WHICH documents every write touches (never their bodies),
// before the write (durable intent) and after it (re-read once committed).
//
// Works with the app's own Mongoose 8 or 9 (never requires mongoose itself). Hooks take no
// `next`: Mongoose 9 passes none, and Mongoose 8 treats parameterless or promise-returning
// hooks as done when they return. Model hooks that need their arguments tell the versions
// apart by the leading `next` Mongoose 8 passes.

const { makeMarker } = require('./plugin/sink')
const { saveHooks } = require('./plugin/document')
const { queryHooks, QUERY_WRITES } = require('./plugin/query')
const { insertManyHooks } = require('./plugin/insertmany')
const { bulkWriteHooks } = require('./plugin/bulkwrite')
const { installTracing, dualsyncBeginCall } = require('./plugin/callctx')

// Mongoose 9 runs hooks carrying this symbol even under `{middleware: false}`: that option is
// for the app's own middleware; skipping sync takes `{sync: false}`.
const BUILT_IN = Symbol.for('mongoose:built-in-middleware')

function tag (fn) {
  fn[BUILT_IN] = true
  return fn
}
tag(dualsyncBeginCall)

/**
 * Counts capture hooks still running (their promises), so shutdown can wait
 * for the marks of writes in progress. A write between its pre and post hook
 * is covered by the pre hook's journaled intent.
 */
function hookTracker () {
  let running = 0
  let waiters = []
  const done = () => {
    if (--running === 0) {
      const w = waiters
      waiters = []
      for (const resolve of w) resolve(true)
    }
  }
  /** Wraps a hook, keeping its arity (Mongoose 8 reads it) and name. */
  function track (fn) {
    const wrapped = function (...args) {
      const r = fn.apply(this, args)
      if (r && typeof r.then === 'function') {
        running++
        r.then(done, done)
      }
      return r
    }
    Object.defineProperty(wrapped, 'length', { value: fn.length })
    Object.defineProperty(wrapped, 'name', { value: fn.name })
    return wrapped
  }
  /** @param {number} timeoutMs @returns {Promise<boolean>} false if hooks were still running at the bound */
  function settled (timeoutMs) {
    if (running === 0) return Promise.resolve(true)
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        waiters = waiters.filter((w) => w !== finish)
        resolve(false)
      }, timeoutMs)
      const finish = () => {
        clearTimeout(timer)
        resolve(true)
      }
      waiters.push(finish)
    })
  }
  return { track, settled }
}

const DOC = { document: true, query: false }
const QUERY = { document: false, query: true }

/**
 * Creates the capture plugin for a sink.
 * @param {object} sink
 * @param {(ops: Array<{collection: string, db: string, id?: any, kind?: 'collection'}>) => void} sink.mark
 *   receives marks synchronously: `id` is the raw `_id` value; `kind: 'collection'` (no `id`)
 *   asks for the whole collection to be reconciled
 * @param {(collectionName: string) => boolean} sink.isExcluded  collections never marked
 * @param {(err: Error, context: {hook: string, model?: string, collection?: string, db?: string}) => void} sink.onError
 *   receives failures inside hooks (never thrown into the app's write)
 * @param {number} [sink.queryMarkCap=10000]  above this many matched `_id`s, mark the collection instead
 * @param {number} [sink.queryMarkTimeoutMs=5000]  maxTimeMS of the `_id`-only lookup; past it, mark the collection instead
 * @returns {((schema: import('mongoose').Schema, options?: object) => void) & {settled: (timeoutMs: number) => Promise<boolean>}}
 *   the plugin, `dualsyncPlugin`; `settled(ms)` resolves once no capture hook is running
 */
function createPlugin (sink) {
  const marker = makeMarker(sink)
  installTracing()
  // Per plugin instance, so two instances never mix their state.
  const save = saveHooks(marker, new WeakMap())
  const query = queryHooks(marker, new WeakMap())
  const insertMany = insertManyHooks(marker)
  const bulkWrite = bulkWriteHooks(marker)
  const tracker = hookTracker()
  for (const h of [save, query, insertMany, bulkWrite]) {
    for (const [k, fn] of Object.entries(h)) h[k] = tag(tracker.track(fn))
  }
  const applied = new WeakSet()

  /**
   * Registers the capture hooks on a schema (use globally: `mongoose.plugin(dualsyncPlugin)`).
   * @param {import('mongoose').Schema} schema
   */
  function dualsyncPlugin (schema) {
    if (applied.has(schema)) return
    applied.add(schema)

    schema.pre('save', DOC, save.pre)
    schema.post('save', DOC, save.post)
    schema.post('save', { ...DOC, errorHandler: true }, save.error)

    schema.pre(QUERY_WRITES, QUERY, query.pre)
    schema.post(QUERY_WRITES, QUERY, query.post)
    schema.post(QUERY_WRITES, { ...QUERY, errorHandler: true }, query.error)

    // The begin hook must run first, synchronously, to give the call its own store (callctx.js).
    schema.pre(['insertMany', 'bulkWrite'], {}, dualsyncBeginCall, undefined, true)
    schema.pre('insertMany', insertMany.pre)
    schema.post('insertMany', insertMany.post)
    schema.post('insertMany', { errorHandler: true }, insertMany.error)
    schema.pre('bulkWrite', bulkWrite.pre)
    schema.post('bulkWrite', bulkWrite.post)
    schema.post('bulkWrite', { errorHandler: true }, bulkWrite.error)
  }

  dualsyncPlugin.settled = tracker.settled
  return dualsyncPlugin
}

module.exports = { createPlugin }
