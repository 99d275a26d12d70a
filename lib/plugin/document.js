'use strict'
// Document middleware: `save` (which also carries Model.create, Model.insertOne and the
// per-document half of Model.bulkSave). `doc.deleteOne()` / `doc.updateOne()` run as queries
// filtered by `_id`, so the query hooks mark them (and see their `{sync: false}` option).

const { docId } = require('./namedids')
const { sessionFor } = require('./resolve')

/**
 * The session a save runs in, as Mongoose picks it: the save's `session` option, else the
 * document's own (`doc.$session()`), else the transaction AsyncLocalStorage's.
 */
function saveSession (doc, model, saveOptions) {
  const own = (saveOptions && saveOptions.session) ||
    (typeof doc.$session === 'function' ? doc.$session() : undefined)
  return sessionFor(model, own || undefined)
}

/**
 * @param {ReturnType<import('./sink').makeMarker>} marker
 * @param {WeakMap<object, object>} states  the pre→post state of each document being saved (one
 *   map per plugin instance: a property on the document would change its shape, and Mongoose's
 *   own code on documents would run slower for it)
 * @returns {{pre: Function, post: Function, error: Function}}
 */
function saveHooks (marker, states) {
  // Plain functions, not async ones: a hook whose mark is done when it returns (the connection
  // is open) gives Mongoose nothing to await, so the write goes on in the same tick.
  function dualsyncPreSave () {
    // Global plugins reach child schemas too: subdocuments are saved as part of their parent.
    if (this.$isSubdocument) return undefined
    const model = this.constructor
    const saveOptions = this.$__ && this.$__.saveOptions
    if (saveOptions && saveOptions.sync === false) return undefined
    try {
      const t = marker.target(model, 'pre:save')
      if (!t) return undefined
      const id = docId(this)
      if (id === undefined) return undefined // Mongoose refuses to save a document without _id
      states.set(this, { t, id, session: saveSession(this, model, saveOptions) })
      return marker.hookResult(marker.mark(t, [id], { hook: 'pre:save' }), 'pre:save', model)
    } catch (err) {
      marker.report(err, 'pre:save', model)
      return undefined
    }
  }

  function finish (doc, hook) {
    try {
      const state = doc && states.get(doc)
      if (!state) return undefined
      states.delete(doc)
      return marker.hookResult(marker.mark(state.t, [state.id], { hook, session: state.session }), hook, doc.constructor)
    } catch (err) {
      marker.report(err, hook, doc && doc.constructor)
      return undefined
    }
  }

  function dualsyncPostSave () {
    return finish(this, 'post:save')
  }

  // A failed save may still have reached the server (e.g. a timeout after the write): mark again.
  // Async: Mongoose 8 goes on after an error handler only once its promise settles.
  async function dualsyncSaveError () {
    await finish(this, 'error:save')
  }

  return { pre: dualsyncPreSave, post: dualsyncPostSave, error: dualsyncSaveError }
}

module.exports = { saveHooks }
