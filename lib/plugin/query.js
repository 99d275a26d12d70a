'use strict'
// Query middleware for every query that writes.

const { resolveFilter, countExisting, sessionFor } = require('./resolve')
const { docId, namesOneId } = require('./namedids')

const QUERY_WRITES = [
  'updateOne',
  'updateMany',
  'replaceOne',
  'findOneAndUpdate',
  'findOneAndReplace',
  'findOneAndDelete',
  'deleteOne',
  'deleteMany'
]
const UPSERTING = new Set(['updateOne', 'updateMany', 'replaceOne', 'findOneAndUpdate', 'findOneAndReplace'])
const SINGLE_UPDATES = new Set(['updateOne', 'replaceOne'])
const FIND_AND_MODIFY = new Set(['findOneAndUpdate', 'findOneAndReplace', 'findOneAndDelete'])

/**
 * True when an error proves the write was not applied (rejected by Mongoose before sending, or
 * by the server as a whole). Network errors and timeouts leave the outcome unknown.
 */
function definitelyNotApplied (err, model) {
  if (!err) return false
  const MongooseError = model && model.base && model.base.Error
  if (typeof MongooseError === 'function' && err instanceof MongooseError) return true
  return err.name === 'MongoServerError' && typeof err.code === 'number' && !err.writeConcernError
}

/** `_id`s a write query's result names: the upserted one, or the returned document's. */
function resultIds (op, options, res) {
  if (!res || typeof res !== 'object') return { ids: [], known: false }
  if (!FIND_AND_MODIFY.has(op)) {
    const id = res.upsertedId
    return id === undefined || id === null ? { ids: [], known: false } : { ids: [id], known: true }
  }
  const meta = options.includeResultMetadata || options.rawResult
  const value = meta ? res.value : res
  const ids = []
  const id = docId(value)
  if (id !== undefined) ids.push(id)
  const upserted = meta && res.lastErrorObject ? res.lastErrorObject.upserted : undefined
  if (upserted !== undefined && upserted !== null) ids.push(upserted)
  return { ids, known: ids.length > 0 }
}

/**
 * @param {ReturnType<import('./sink').makeMarker>} marker
 * @param {symbol} key  per-plugin slot on the query for the pre→post state
 */
function queryHooks (marker, key) {
  async function dualsyncPreQuery () {
    const model = this.model
    const hook = `pre:${this.op}`
    try {
      const options = this.getOptions()
      if (options.sync === false) return
      const t = marker.target(model, hook)
      if (!t) return
      // session: the write's, so post marks inside a transaction wait for its end (txn.js)
      const session = sessionFor(model, options.session)
      const state = { t, ids: [], found: false, collection: false, castError: null, session }
      this[key] = state
      await marker.ready(t) // a write buffered while connecting: the find needs the connection
      let r
      try {
        r = await resolveFilter({
          model,
          query: this,
          filter: this.getFilter(),
          session,
          collation: options.collation,
          cap: marker.cap,
          timeoutMs: marker.timeoutMs
        })
      } catch (err) {
        // Which documents the write touches is unknown: reconcile the collection instead.
        marker.report(err, hook, model)
        r = { collection: true }
      }
      if (r.castError) {
        // Mongoose will reject this filter too, so nothing is written; post checks that.
        state.castError = r.castError
        return
      }
      state.ids = r.ids || []
      state.found = Boolean(r.found)
      state.collection = Boolean(r.collection)
      await marker.mark(t, state.ids, { collection: state.collection, hook })
    } catch (err) {
      marker.report(err, hook, model)
    }
  }

  /** What the query's filter matches now (after the write); a failure reports and answers "the collection". */
  async function findAgain (query, options, hook) {
    try {
      return await resolveFilter({
        model: query.model,
        query,
        filter: query.getFilter(),
        session: options.session,
        collation: options.collation,
        cap: marker.cap,
        timeoutMs: marker.timeoutMs,
        forceFind: true
      })
    } catch (err) {
      marker.report(err, hook, query.model)
      return { collection: true }
    }
  }

  async function dualsyncPostQuery (res) {
    const state = this[key]
    if (!state) return
    this[key] = undefined
    const model = this.model
    const op = this.op
    const hook = `post:${op}`
    try {
      let collection = state.collection
      if (state.castError) {
        // The write went through although its filter did not cast for us: we know nothing.
        marker.report(new Error(`dualsync: ${op} succeeded with a filter that failed to cast (${state.castError.message})`), hook, model)
        collection = true
      }
      const options = this.getOptions()
      const found = resultIds(op, options, res)
      const ids = state.ids.concat(found.ids)
      // More documents touched than the pre-write find named: some came to
      // match the filter in between. Reconcile the collection to cover them.
      if (!collection && COUNTED.has(op) && res && typeof res === 'object' && touchedCount(res) > state.ids.length) collection = true
      // A deleteOne by a non-`_id` filter deleted one document while every document its find
      // named is still there: it took one that came to match in between, unmarked.
      if (!collection && op === 'deleteOne' && state.found && state.ids.length > 0 &&
        res && typeof res === 'object' && touchedCount(res) === 1) {
        try {
          if (await allStillExist(model, state.ids, options.session, marker.timeoutMs)) collection = true
        } catch (err) {
          marker.report(err, hook, model)
          collection = true
        }
      }
      // An updateOne/replaceOne by a non-`_id` filter may have taken a document that came to
      // match in between (the found one having stopped matching): what matches now is marked
      // too. A newcomer the write moved out of the filter stays a known limit.
      if (!collection && SINGLE_UPDATES.has(op) && state.found && state.ids.length > 0 &&
        res && typeof res === 'object' && touchedCount(res) === 1) {
        const now = await findAgain(this, options, hook)
        if (now.collection) collection = true
        else if (now.ids) ids.push(...now.ids)
      }
      // findOneAndUpdate/Replace with upsert returning the old document (null: it inserted one)
      // does not say which `_id` it inserted: look it up by the filter.
      // When the filter names one `_id` by equality, the upsert inserted exactly that one (marked).
      if (!collection && UPSERTING.has(op) && FIND_AND_MODIFY.has(op) && options.upsert && !found.known &&
        !namesOneId(this.getFilter())) {
        const r = await findAgain(this, options, hook)
        if (r.ids && r.ids.length > 0) ids.push(...r.ids)
        // The inserted document may no longer match the filter (a replacement
        // or $set can move it out), and a concurrent insert may match instead:
        // only a collection reconcile is sure to find it.
        collection = true
      }
      await marker.mark(state.t, ids, { collection, hook, session: state.session })
    } catch (err) {
      marker.report(err, hook, model)
    }
  }

  // Mark again after a failure: part of an updateMany may be applied, and a timeout may hide a
  // write that happened. An upsert whose outcome is unknown may have inserted an unknown `_id`.
  async function dualsyncQueryError (err) {
    const state = this[key]
    if (!state) return
    this[key] = undefined
    const model = this.model
    const hook = `error:${this.op}`
    try {
      const options = this.getOptions()
      const upsertUnknown = UPSERTING.has(this.op) && options.upsert && !definitelyNotApplied(err, model)
      await marker.mark(state.t, state.ids, { collection: state.collection || upsertUnknown, hook, session: state.session })
    } catch (e) {
      marker.report(e, hook, model)
    }
  }

  return { pre: dualsyncPreQuery, post: dualsyncPostQuery, error: dualsyncQueryError }
}

/** True when every one of `ids` is still in the model's collection (read from the primary). */
async function allStillExist (model, ids, session, timeoutMs) {
  return (await countExisting(model, ids, { session, timeoutMs })) === ids.length
}

/** Writes whose result is a count (not a document that could hold such a field). */
const COUNTED = new Set(['updateOne', 'updateMany', 'replaceOne', 'deleteOne', 'deleteMany'])

/** Documents an update/delete result says it matched or deleted (0 when it does not say). */
function touchedCount (res) {
  const n = Number(res.matchedCount ?? 0) + Number(res.deletedCount ?? 0)
  return Number.isFinite(n) ? n : 0
}

module.exports = { queryHooks, QUERY_WRITES, definitelyNotApplied, touchedCount }
