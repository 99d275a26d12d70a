'use strict'
// Model.insertMany middleware.

const { ensureInsertId, docId } = require('./namedids')
const { currentCall, dualsyncFinishCall, dualsyncFailCall } = require('./callctx')
const { sessionFor } = require('./resolve')

/** `_id`s an insertMany result (documents, or the driver's result with rawResult) names. */
function insertedIds (res) {
  if (Array.isArray(res)) return res.map(docId)
  if (res && typeof res === 'object' && res.insertedIds && typeof res.insertedIds === 'object') {
    return Object.values(res.insertedIds)
  }
  return []
}

/**
 * @param {ReturnType<import('./sink').makeMarker>} marker
 * @returns {{pre: Function, post: Function, error: Function}}
 */
function insertManyHooks (marker) {
  function finish (state, res, err) {
    const hook = err ? 'error:insertMany' : 'post:insertMany'
    try {
      const ids = state.ids.concat(insertedIds(res))
      if (err && Array.isArray(err.insertedDocs)) ids.push(...err.insertedDocs.map(docId))
      const done = marker.mark(state.t, ids, { hook, session: state.session })
      if (done && typeof done.catch === 'function') done.catch((e) => marker.report(e, hook, state.t.model))
    } catch (e) {
      marker.report(e, hook, state.t.model)
    }
  }

  // Mongoose 8 calls this with (next, docs, options), Mongoose 9 with (docs) only: its options
  // come from the call's traced store.
  async function dualsyncPreInsertMany (a, b, c) {
    const model = this
    try {
      const v8 = typeof a === 'function'
      const docs = v8 ? b : a
      const call = currentCall()
      const options = (v8 ? c : call && call.options) || {}
      if (options.sync === false) return
      const t = marker.target(model, 'pre:insertMany')
      if (!t) return
      const ids = []
      for (const doc of Array.isArray(docs) ? docs : [docs]) {
        const id = ensureInsertId(model, doc, Boolean(options.lean))
        if (id !== undefined) ids.push(id)
      }
      const state = { t, ids, session: sessionFor(model, options.session) }
      if (call) call.finishers.push((res, err) => finish(state, res, err))
      await marker.mark(t, ids, { hook: 'pre:insertMany' })
    } catch (err) {
      marker.report(err, 'pre:insertMany', model)
    }
  }

  return { pre: dualsyncPreInsertMany, post: dualsyncFinishCall, error: dualsyncFailCall }
}

module.exports = { insertManyHooks }
