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

const DOC = { document: true, query: false }
const QUERY = { document: false, query: true }

/**
 * Creates the capture plugin for a sink.
 * @param {object} sink
 * @param {(ops: Array<{collection: string, db: string, id?: any, kind?: 'collection'}>) => void} sink.mark
 *   receives marks synchronously: `id` is the raw `_id` value; `kind: 'collection'` (no `id`)
 *   asks for the whole collection to be reconciled
 * @param {(collectionName: string) => boolean} sink.isExcluded  collections never marked
 * @param {(err: Error, context: {hook: string, model?: string}) => void} sink.onError
 *   receives failures inside hooks (never thrown into the app's write)
 * @param {number} [sink.queryMarkCap=10000]  above this many matched `_id`s, mark the collection instead
 * @param {number} [sink.queryMarkTimeoutMs=5000]  maxTimeMS of the `_id`-only lookup; past it, mark the collection instead
 * @returns {(schema: import('mongoose').Schema, options?: object) => void} the plugin, `dualsyncPlugin`
 */
function createPlugin (sink) {
  const marker = makeMarker(sink)
  installTracing()
  // One slot per plugin instance on queries/documents, so two instances never mix their state.
  const key = Symbol('dualsync.state')
  const save = saveHooks(marker, key)
  const query = queryHooks(marker, key)
  const insertMany = insertManyHooks(marker)
  const bulkWrite = bulkWriteHooks(marker)
  for (const h of [save, query, insertMany, bulkWrite]) {
    for (const fn of Object.values(h)) tag(fn)
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

  return dualsyncPlugin
}

module.exports = { createPlugin }
