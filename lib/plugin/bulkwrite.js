'use strict'
// Model.bulkWrite middleware (also carries Model.bulkSave's writes).

const { ensureInsertId, idKey } = require('./namedids')
const { prepareFilter, findIds, sessionFor } = require('./resolve')
const { currentCall, dualsyncFinishCall, dualsyncFailCall } = require('./callctx')
const { definitelyNotApplied } = require('./query')
const { filterReads, updateWrites, timestampFields } = require('./fields')
const { sureMatches } = require('./bulkcount')
const { checkSingles } = require('./bulkcheck')

const FILTERED = new Set(['updateOne', 'updateMany', 'replaceOne', 'deleteOne', 'deleteMany'])
const UPSERTING = new Set(['updateOne', 'updateMany', 'replaceOne'])
const SINGLE = new Set(['updateOne', 'replaceOne', 'deleteOne'])
const DELETES = new Set(['deleteOne', 'deleteMany'])

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
  /**
   * The post mark's `_id`s, and whether the collection must be reconciled, from the write's
   * result; `problem`: why, when it is an error to report.
   */
  function decide (state, res, err) {
    const result = err ? err.result : res
    const ids = state.ids.concat(resultIdMap(result, 'insertedIds') || [])
    const upserted = resultIdMap(result, 'upsertedIds')
    if (upserted) ids.push(...upserted)
    let collection = state.collection
    let problem = null
    // Updates/deletes touched more found documents than the ops are sure to touch: some op
    // took a document that came to match in between. Reconcile the collection to cover it.
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
      problem = new Error('dualsync: bulkWrite succeeded with a filter that failed to cast')
      collection = true
    }
    return { result, ids, collection, problem }
  }

  /** decide(), once per outcome: the check and the finisher usually see the same one. */
  function decideOnce (state, res, err) {
    const last = state.decided
    if (last && last.res === res && last.err === err) return last.d
    const d = decide(state, res, err)
    state.decided = { res, err, d }
    return d
  }

  /** Post/error middleware, awaited by the app's call: what its single-document ops took. */
  async function check (state, res, err) {
    if (state.singles.length === 0) return
    const hook = err ? 'error:bulkWrite' : 'post:bulkWrite'
    try {
      const d = decideOnce(state, res, err)
      if (d.collection) return // reconciled anyway
      state.checked = await checkSingles(marker, state, d.result, hook)
    } catch (e) {
      marker.report(e, hook, state.t.model)
      state.checked = { ids: [], collection: true }
    }
  }

  function finish (state, res, err) {
    const hook = err ? 'error:bulkWrite' : 'post:bulkWrite'
    try {
      const d = decideOnce(state, res, err)
      if (d.problem) marker.report(d.problem, hook, state.t.model)
      let collection = d.collection
      if (!collection && state.singles.length > 0) {
        // Equal counts do not prove a single-document op took a found document (bulkcheck.js).
        // A call whose middleware did not run (so no check) is reconciled instead.
        if (!state.checked) collection = true
        else {
          collection = state.checked.collection
          d.ids.push(...state.checked.ids)
        }
      }
      const done = marker.mark(state.t, d.ids, { collection, hook, session: state.session })
      if (done && typeof done.catch === 'function') done.catch((e) => marker.report(e, hook, state.t.model))
    } catch (e) {
      marker.report(e, hook, state.t.model)
    }
  }

  /**
   * Finds what the filtered ops will touch. Ops naming their `_id`s need no find when every op
   * does (nothing else can be touched). Otherwise each filtered op is found on its own (all at
   * once), the `_id`-naming ones included, and bulkcount.js counts the found documents the ops
   * are sure to touch: a document found for one op, an absent named `_id`, or a document one op
   * can move out of another's filter must not leave room for a newcomer another op took.
   * @returns {Promise<{ids?: any[], matched?: number, collection?: boolean}>} `matched`: found
   *   documents the ops are sure to update or delete; a result touching more took a newcomer
   */
  async function resolveOps (model, ops, options, state) {
    const query = model.find() // never executed: casts filters with the model's settings
    const counted = [] // per filtered op: { single, deletes, spec, castFilter, named, reads, writes }
    const aliases = (model.schema && model.schema.aliases) || {}
    const stamps = timestampFields(model.schema)
    const mapping = model.schema && model.schema.discriminatorMapping
    const discriminatorKey = mapping && !mapping.isRoot && mapping.key
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
      const deletes = DELETES.has(kind)
      const reads = filterReads(spec.filter, aliases)
      if (discriminatorKey) reads.add(discriminatorKey)
      const writes = deletes
        ? new Set()
        : updateWrites(kind === 'replaceOne' ? spec.replacement : spec.update, { replace: kind === 'replaceOne', aliases, extra: stamps })
      counted.push({ single: SINGLE.has(kind), deletes, spec, castFilter: p.castFilter, named: Boolean(p.ids), reads, writes })
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
    for (const [i, r] of found.entries()) {
      ids.push(...r.ids)
      const c = counted[i]
      // A single-document op by a non-`_id` filter may take a newcomer with the counts equal.
      if (c.single && !c.named && r.ids.length > 0) state.singles.push({ deletes: c.deletes, spec: c.spec, castFilter: c.castFilter })
      if (c.deletes) state.deleteFound.push(...r.ids)
    }
    const matched = sureMatches(counted.map((c, i) => ({ ...c, keys: found[i].ids.map(idKey) })))
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
      // matched: found documents the filtered ops are sure to touch (state.ids also holds inserts')
      // session: the write's, so post marks inside a transaction wait for its end (txn.js)
      // singles / deleteFound: for the post-write check of single-document ops (bulkcheck.js)
      // decided: the outcome read by the check, kept for the finisher
      const state = { t, ids: [], matched: 0, collection: false, upserts: false, castFailed: false, session: sessionFor(model, options.session), singles: [], deleteFound: [], decided: null }
      const call = currentCall()
      if (call) {
        call.checks.push((res, err) => check(state, res, err))
        call.finishers.push((res, err) => finish(state, res, err))
      }
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
