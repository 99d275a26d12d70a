'use strict'
// Query middleware for every query that writes.

const { resolveFilter, prepareFilter, findPrepared, countExisting, sessionFor } = require('./resolve')
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
 * @param {WeakMap<object, object>} states  the pre→post state of each query (as in saveHooks)
 */
function queryHooks (marker, states) {
  // Pre and post hooks are plain functions: a write whose filter names its `_id`s (the common
  // case) is marked before they return, and Mongoose then has nothing to await. Only a filter
  // that needs a find (or a connection still opening) returns a promise.
  function dualsyncPreQuery () {
    const model = this.model
    const hook = `pre:${this.op}`
    try {
      const options = this.getOptions()
      if (options.sync === false) return undefined
      const t = marker.target(model, hook)
      if (!t) return undefined
      // session: the write's, so post marks inside a transaction wait for its end (txn.js)
      const session = sessionFor(model, options.session)
      const state = { t, ids: [], found: false, collection: false, castError: null, session }
      states.set(this, state)
      const args = {
        model,
        query: this,
        filter: this.getFilter(),
        session,
        collation: options.collation,
        cap: marker.cap,
        timeoutMs: marker.timeoutMs
      }
      const opening = marker.ready(t)
      if (opening) return marker.hookResult(opening.then(() => resolveAndMark(state, args, null, hook)), hook, model)
      let p
      try {
        p = prepareFilter(args)
      } catch (err) {
        marker.report(err, hook, model)
        p = { collection: true }
      }
      if (p.castFilter) return marker.hookResult(resolveAndMark(state, args, p, hook), hook, model)
      return marker.hookResult(markResolved(state, p, hook), hook, model)
    } catch (err) {
      marker.report(err, hook, model)
      return undefined
    }
  }

  /** The pre hook's find (or all of its resolution, `p` null: the connection was opening). */
  async function resolveAndMark (state, args, p, hook) {
    let r
    try {
      r = p ? await findPrepared(args, p) : await resolveFilter(args)
    } catch (err) {
      // Which documents the write touches is unknown: reconcile the collection instead.
      marker.report(err, hook, args.model)
      r = { collection: true }
    }
    return markResolved(state, r, hook)
  }

  function markResolved (state, r, hook) {
    if (r.castError) {
      // Mongoose will reject this filter too, so nothing is written; post checks that.
      state.castError = r.castError
      return undefined
    }
    state.ids = r.ids || []
    state.found = Boolean(r.found)
    state.collection = Boolean(r.collection)
    return marker.mark(state.t, state.ids, { collection: state.collection, hook })
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

  function dualsyncPostQuery (res) {
    const state = states.get(this)
    if (!state) return undefined
    states.delete(this)
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
      const check = collection ? null : afterCheck(this, state, op, options, res, found)
      if (check) return marker.hookResult(checkThenMark(this, state, check, options, ids, hook), hook, model)
      return marker.hookResult(marker.mark(state.t, ids, { collection, hook, session: state.session }), hook, model)
    } catch (err) {
      marker.report(err, hook, model)
      return undefined
    }
  }

  /**
   * The after-write check a single-document write by a non-`_id` filter needs (one per op, so
   * at most one applies), or null. A check adds the `_id`s it finds to `ids` and resolves to
   * whether the collection must be reconciled instead.
   * @returns {null | ((query: object, state: object, options: object, ids: any[], hook: string) => Promise<boolean>)}
   */
  function afterCheck (query, state, op, options, res, found) {
    const tookOne = state.found && state.ids.length > 0 && res && typeof res === 'object' && touchedCount(res) === 1
    if (op === 'deleteOne' && tookOne) return deletedAnother
    if (SINGLE_UPDATES.has(op) && tookOne) return addWhatMatchesNow
    if (UPSERTING.has(op) && FIND_AND_MODIFY.has(op) && options.upsert && !found.known &&
      !namesOneId(query.getFilter())) return addTheUpserted
    return null
  }

  // A deleteOne by a non-`_id` filter deleted one document while every document its find
  // named is still there: it took one that came to match in between, unmarked.
  async function deletedAnother (query, state, options, ids, hook) {
    try {
      return await allStillExist(query.model, state.ids, options.session, marker.timeoutMs)
    } catch (err) {
      marker.report(err, hook, query.model)
      return true
    }
  }

  // An updateOne/replaceOne by a non-`_id` filter may have taken a document that came to
  // match in between (the found one having stopped matching): what matches now is marked
  // too. A newcomer the write moved out of the filter stays a known limit.
  async function addWhatMatchesNow (query, state, options, ids, hook) {
    const now = await findAgain(query, options, hook)
    if (now.collection) return true
    if (now.ids) ids.push(...now.ids)
    return false
  }

  // findOneAndUpdate/Replace with upsert returning the old document (null: it inserted one)
  // does not say which `_id` it inserted: look it up by the filter. (When the filter names one
  // `_id` by equality, the upsert inserted exactly that one, already marked: no check.)
  async function addTheUpserted (query, state, options, ids, hook) {
    const r = await findAgain(query, options, hook)
    if (r.ids && r.ids.length > 0) ids.push(...r.ids)
    // The inserted document may no longer match the filter (a replacement
    // or $set can move it out), and a concurrent insert may match instead:
    // only a collection reconcile is sure to find it.
    return true
  }

  async function checkThenMark (query, state, check, options, ids, hook) {
    const collection = await check(query, state, options, ids, hook)
    await marker.mark(state.t, ids, { collection, hook, session: state.session })
  }

  // Mark again after a failure: part of an updateMany may be applied, and a timeout may hide a
  // write that happened. An upsert whose outcome is unknown may have inserted an unknown `_id`.
  async function dualsyncQueryError (err) {
    const state = states.get(this)
    if (!state) return
    states.delete(this)
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
