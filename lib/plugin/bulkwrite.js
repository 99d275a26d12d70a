'use strict'
// Model.bulkWrite middleware (also carries Model.bulkSave's writes).

const { ensureInsertId } = require('./ids')
const { prepareFilter, findIds, sessionFor } = require('./resolve')
const { currentCall, finishFromMiddleware } = require('./callctx')
const { definitelyNotApplied } = require('./query')

const FILTERED = new Set(['updateOne', 'updateMany', 'replaceOne', 'deleteOne', 'deleteMany'])
const UPSERTING = new Set(['updateOne', 'updateMany', 'replaceOne'])
const SINGLE = new Set(['updateOne', 'replaceOne', 'deleteOne'])

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
 * Finds the `_id`s matched by the ops that need a find: one `$or` query per collation (one round
 * trip for a typical bulk of updates by some business key), each filter alone if that fails.
 */
async function findGroups (model, groups, session, cap) {
  const ids = []
  for (const { collation, filters } of groups.values()) {
    let r
    try {
      r = await findIds(model, filters.length === 1 ? filters[0] : { $or: filters }, { session, collation, cap: cap - ids.length })
    } catch (err) {
      if (filters.length === 1) throw err
      r = { ids: [] }
      for (const f of filters) {
        const one = await findIds(model, f, { session, collation, cap: cap - ids.length - r.ids.length })
        if (one.collection) return { collection: true }
        r.ids.push(...one.ids)
      }
    }
    if (r.collection) return { collection: true }
    ids.push(...r.ids)
  }
  return { ids }
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
      const done = marker.mark(state.t, ids, { collection, hook })
      if (done && typeof done.catch === 'function') done.catch((e) => marker.report(e, hook, state.t.model))
    } catch (e) {
      marker.report(e, hook, state.t.model)
    }
  }

  /**
   * Marks what the filtered ops will touch. Ops naming their `_id`s need no find; ops with other
   * filters are found in one `$or` per collation. When the bulk has both, the `_id`-naming ops'
   * filters join the find too, so the count bound below only counts documents that exist: an
   * absent named `_id` must not leave room for a document that came to match in between.
   * @returns {Promise<{ids?: any[], matched?: number, collection?: boolean}>} `matched`: the most
   *   documents the ops can update or delete unless one came to match after the find
   */
  async function resolveOps (model, ops, options, state) {
    const query = model.find() // never executed: casts filters with the model's settings
    const groups = new Map()
    const counted = [] // per filtered op: { single, spec, ids (when its filter names them) }
    let resolved = 0
    const addToGroup = (spec, castFilter) => {
      const key = spec.collation ? JSON.stringify(spec.collation) : ''
      if (!groups.has(key)) groups.set(key, { collation: spec.collation, filters: [] })
      groups.get(key).filters.push(castFilter)
    }
    for (const op of ops) {
      const [kind, spec] = opEntry(op)
      if (kind === 'insertOne') {
        const id = ensureInsertId(model, spec.document, false)
        if (id !== undefined) state.ids.push(id)
        continue
      }
      if (!FILTERED.has(kind)) continue
      if (UPSERTING.has(kind) && spec.upsert) state.upserts = true
      const p = prepareFilter({ model, query, filter: spec.filter, cap: marker.cap - resolved })
      if (p.castError) {
        state.castFailed = true // Mongoose rejects this op as well
      } else if (p.collection) {
        return { collection: true }
      } else {
        const single = SINGLE.has(kind)
        if (p.ids) {
          state.ids.push(...p.ids)
          resolved += p.ids.length
          counted.push({ single, spec, ids: p.ids })
        } else {
          addToGroup(spec, p.castFilter)
          counted.push({ single, spec, ids: null })
        }
      }
    }
    // Every touched document was named by `_id`: no count to check.
    if (groups.size === 0) return { ids: [], matched: Infinity }
    for (const c of counted) {
      if (!c.ids) continue
      const p = prepareFilter({ model, query, filter: c.spec.filter, cap: marker.cap, forceFind: true })
      if (p.castFilter) addToGroup(c.spec, p.castFilter)
    }
    const r = await findGroups(model, groups, sessionFor(model, options.session), marker.cap - resolved)
    if (r.collection) return r
    // Without a newcomer and without overlapping ops, the ops touch at most the documents found,
    // and each op at most its named ones that exist, or one when it is a single-document op.
    // Ops that touch the same document exceed this and reconcile the collection: the bound
    // cannot tell them from a newcomer, and missing a newcomer would lose its write.
    const found = new Set(r.ids.map(idKey))
    let perOp = 0
    for (const c of counted) {
      const n = c.ids ? c.ids.filter((id) => found.has(idKey(id))).length : found.size
      perOp += c.single ? Math.min(1, n) : n
    }
    return { ids: r.ids, matched: Math.min(found.size, perOp) }
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
      const state = { t, ids: [], matched: 0, collection: false, upserts: false, castFailed: false }
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

  function dualsyncPostBulkWrite (res) {
    finishFromMiddleware(res, null)
  }

  async function dualsyncBulkWriteError (err) {
    finishFromMiddleware(null, err)
  }

  return { pre: dualsyncPreBulkWrite, post: dualsyncPostBulkWrite, error: dualsyncBulkWriteError }
}

module.exports = { bulkWriteHooks }
