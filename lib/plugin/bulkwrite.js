'use strict'
// Model.bulkWrite middleware (also carries Model.bulkSave's writes).

const { ensureInsertId } = require('./namedids')
const { prepareFilter, findIds, sessionFor } = require('./resolve')
const { currentCall, dualsyncFinishCall, dualsyncFailCall } = require('./callctx')
const { definitelyNotApplied } = require('./query')

const FILTERED = new Set(['updateOne', 'updateMany', 'replaceOne', 'deleteOne', 'deleteMany'])
const UPSERTING = new Set(['updateOne', 'updateMany', 'replaceOne'])
const SINGLE = new Set(['updateOne', 'replaceOne', 'deleteOne'])
const DELETES = new Set(['deleteOne', 'deleteMany'])

/** A comparable key for an `_id` (ObjectIds by hex; others by type and value). */
function idKey (id) {
  if (id && typeof id.toHexString === 'function') return `oid:${id.toHexString()}`
  if (id instanceof Date) return `date:${id.getTime()}`
  if (id && typeof id === 'object') return `obj:${JSON.stringify(id)}`
  return `${typeof id}:${String(id)}`
}

function opEntry (op) {
  if (!op || typeof op !== 'object') return [null, null]
  const kind = Object.keys(op)[0]
  const spec = op[kind]
  return spec && typeof spec === 'object' ? [kind, spec] : [null, null]
}

/** `insertedIds` / `upsertedIds` of a BulkWriteResult-like object ({index: id}). */
function resultIdMap (res, name) {
  const map = res && typeof res === 'object' ? res[name] : undefined
  return map && typeof map === 'object' ? Object.values(map) : null
}

/**
 * @param {ReturnType<import('./sink').makeMarker>} marker
 * @returns {{pre: Function, post: Function, error: Function}}
 */
function bulkWriteHooks (marker) {
  function finish (state, res, err) {
    const hook = err ? 'error:bulkWrite' : 'post:bulkWrite'
    try {
      const result = err ? err.result : res
      const ids = state.ids.concat(resultIdMap(result, 'insertedIds') || [])
      const upserted = resultIdMap(result, 'upsertedIds')
      if (upserted) ids.push(...upserted)
      let collection = state.collection
      // Updates/deletes touched more documents than the pre-write find named:
      // some came to match in between. Reconcile the collection to cover them.
      if (result && typeof result === 'object') {
        // Only the finds count here: an insertOne's `_id` is no match for an update or delete.
        const touched = Number(result.matchedCount || 0) + Number(result.deletedCount || 0)
        if (touched > state.matched) collection = true
      }
      // A failed bulk may have upserted documents its error does not list (FerretDB leaves
      // `upserted` out of a reply with write errors): only a collection reconcile finds them.
      if (err && state.upserts && !definitelyNotApplied(err, state.t.model)) collection = true
      if (state.castFailed && !err && !(res && res.mongoose && res.mongoose.validationErrors &&
        res.mongoose.validationErrors.length > 0)) {
        // Mongoose ran an op whose filter did not cast for us: we cannot know what it touched.
        marker.report(new Error('dualsync: bulkWrite succeeded with a filter that failed to cast'), hook, state.t.model)
        collection = true
      }
      const done = marker.mark(state.t, ids, { collection, hook, session: state.session })
      if (done && typeof done.catch === 'function') done.catch((e) => marker.report(e, hook, state.t.model))
    } catch (e) {
      marker.report(e, hook, state.t.model)
    }
  }

  /**
   * Finds what the filtered ops will touch. Ops naming their `_id`s need no find when every op
   * does (nothing else can be touched). Otherwise each filtered op is found on its own (all at
   * once), the `_id`-naming ones included, so the bound counts, per op, documents that exist
   * and match that op: a document found for one op, or an absent named `_id`, must not leave
   * room for a newcomer another op took.
   * @returns {Promise<{ids?: any[], matched?: number, collection?: boolean}>} `matched`: the most
   *   documents the ops can update or delete unless one came to match after the finds
   */
  async function resolveOps (model, ops, options, state) {
    const query = model.find() // never executed: casts filters with the model's settings
    const counted = [] // per filtered op: { single, spec, castFilter, named }
    let named = 0
    for (const op of ops) {
      const [kind, spec] = opEntry(op)
      if (kind === 'insertOne') {
        const id = ensureInsertId(model, spec.document, false)
        if (id !== undefined) state.ids.push(id)
        continue
      }
      if (!FILTERED.has(kind)) continue
      if (UPSERTING.has(kind) && spec.upsert) state.upserts = true
      const p = prepareFilter({ model, query, filter: spec.filter, cap: marker.cap - named })
      if (p.castError) {
        state.castFailed = true // Mongoose rejects this op as well
        continue
      }
      if (p.collection) return { collection: true }
      if (p.ids) {
        state.ids.push(...p.ids) // marked whether or not they exist yet
        named += p.ids.length
      }
      counted.push({ single: SINGLE.has(kind), deletes: DELETES.has(kind), spec, castFilter: p.castFilter, named: Boolean(p.ids) })
    }
    // Every touched document was named by `_id`: no count to check.
    if (counted.every((c) => c.named)) return { ids: [], matched: Infinity }
    const session = sessionFor(model, options.session)
    const findOne = (c) => {
      const castFilter = c.castFilter ||
        prepareFilter({ model, query, filter: c.spec.filter, cap: marker.cap, forceFind: true }).castFilter
      // Not castable as a whole: Mongoose rejects the op too; count it as touching nothing.
      if (!castFilter) return { ids: [] }
      return findIds(model, castFilter, { session, collation: c.spec.collation, cap: marker.cap, timeoutMs: marker.timeoutMs })
    }
    let found
    if (session) {
      // A session runs one command at a time: concurrent finds as the first commands of a
      // transaction both try to start it, and the server refuses one (and may abort the app's).
      found = []
      for (const c of counted) found.push(await findOne(c))
    } else {
      found = await Promise.all(counted.map(findOne))
    }
    if (found.some((r) => r.collection)) return { collection: true }
    const ids = []
    let matched = 0
    // Documents an earlier delete op will have removed (when it is known which) are not there
    // for a later op to touch: counting them would leave room for a newcomer.
    const removed = new Set()
    for (const [i, r] of found.entries()) {
      const keys = r.ids.map(idKey)
      const live = keys.filter((k) => !removed.has(k)).length
      matched += counted[i].single ? Math.min(1, live) : live
      if (counted[i].deletes && (!counted[i].single || live === 1)) for (const k of keys) removed.add(k)
      ids.push(...r.ids)
    }
    return ids.length > marker.cap ? { collection: true } : { ids, matched }
  }

  // Mongoose 8 calls this with (next, ops, options), Mongoose 9 with (ops, options).
  async function dualsyncPreBulkWrite (a, b, c) {
    const model = this
    try {
      const v8 = typeof a === 'function'
      const ops = v8 ? b : a
      const options = (v8 ? c : b) || {}
      if (options.sync === false || !Array.isArray(ops) || ops.length === 0) return
      const t = marker.target(model, 'pre:bulkWrite')
      if (!t) return
      // matched: the most documents the filtered ops can touch (state.ids also holds inserts')
      // session: the write's, so post marks inside a transaction wait for its end (txn.js)
      const state = { t, ids: [], matched: 0, collection: false, upserts: false, castFailed: false, session: sessionFor(model, options.session) }
      const call = currentCall()
      if (call) call.finishers.push((res, err) => finish(state, res, err))
      await marker.ready(t) // a write buffered while connecting: finds need the connection
      let r
      try {
        r = await resolveOps(model, ops, options, state)
      } catch (err) {
        marker.report(err, 'pre:bulkWrite', model)
        r = { collection: true }
      }
      if (r.collection) {
        state.collection = true
      } else {
        state.ids.push(...r.ids)
        state.matched = r.matched
      }
      await marker.mark(t, state.ids, { collection: state.collection, hook: 'pre:bulkWrite' })
    } catch (err) {
      marker.report(err, 'pre:bulkWrite', model)
    }
  }

  return { pre: dualsyncPreBulkWrite, post: dualsyncFinishCall, error: dualsyncFailCall }
}

module.exports = { bulkWriteHooks }
