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
 * @param {symbol} key  per-plugin slot on the document for the pre→post state
 * @returns {{pre: Function, post: Function, error: Function}}
 */
function saveHooks (marker, key) {
  async function dualsyncPreSave () {
    // Global plugins reach child schemas too: subdocuments are saved as part of their parent.
    if (this.$isSubdocument) return
    const model = this.constructor
    const saveOptions = this.$__ && this.$__.saveOptions
    if (saveOptions && saveOptions.sync === false) return
    try {
      const t = marker.target(model, 'pre:save')
      if (!t) return
      const id = docId(this)
      if (id === undefined) return // Mongoose refuses to save a document without _id
      this[key] = { t, id, session: saveSession(this, model, saveOptions) }
      await marker.mark(t, [id], { hook: 'pre:save' })
    } catch (err) {
      marker.report(err, 'pre:save', model)
    }
  }

  function finish (doc, hook) {
    const state = doc && doc[key]
    if (!state) return undefined
    doc[key] = undefined
    return marker.mark(state.t, [state.id], { hook, session: state.session })
  }

  async function dualsyncPostSave () {
    try {
      await finish(this, 'post:save')
    } catch (err) {
      marker.report(err, 'post:save', this.constructor)
    }
  }

  // A failed save may still have reached the server (e.g. a timeout after the write): mark again.
  async function dualsyncSaveError () {
    try {
      await finish(this, 'error:save')
    } catch (err) {
      marker.report(err, 'error:save', this.constructor)
    }
  }

  return { pre: dualsyncPreSave, post: dualsyncPostSave, error: dualsyncSaveError }
}

module.exports = { saveHooks }
