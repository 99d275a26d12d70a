'use strict'
// After a bulkWrite: did a single-document op take a document its find did not name?
//
// The count check (bulkcount.js) cannot see it: a deleteOne or updateOne by a non-`_id` filter
// whose found document stopped matching can take a newcomer instead, with the counts equal.
// As query.js does for one write: a delete that removed more documents than the found ones now
// gone took a newcomer (reconcile the collection); an update's filter is found again and what
// matches now is marked. Runs in the bulk's post (or error) middleware, which the app's call
// awaits, so the post mark that follows holds the answer before flush() can return; in the
// write's session, so inside a transaction it sees the transaction's own writes.

const { findIds, countExisting } = require('./resolve')
const { idKey } = require('./namedids')

function unique (ids) {
  const seen = new Map()
  for (const id of ids) seen.set(idKey(id), id)
  return [...seen.values()]
}

async function findTaken (marker, state, result) {
  const model = state.t.model
  if (state.singles.some((s) => s.deletes)) {
    const found = unique(state.deleteFound)
    const deleted = Number((result && result.deletedCount) || 0)
    const gone = found.length - (found.length > 0 ? await countExisting(model, found, { session: state.session, timeoutMs: marker.timeoutMs }) : 0)
    if (deleted > gone) return { ids: [], collection: true }
  }
  const singles = state.singles.filter((s) => !s.deletes && s.castFilter)
  const find = (s) => findIds(model, s.castFilter, { session: state.session, collation: s.spec.collation, cap: marker.cap, timeoutMs: marker.timeoutMs })
  // Outside a session the finds run at once (the app's call waits for them); a session's
  // operations go one at a time, as a transaction needs.
  const results = []
  if (state.session) {
    for (const s of singles) {
      const r = await find(s)
      if (r.collection) return { ids: [], collection: true }
      results.push(r)
    }
  } else {
    results.push(...await Promise.all(singles.map(find)))
  }
  const ids = []
  for (const r of results) {
    if (r.collection) return { ids: [], collection: true }
    ids.push(...r.ids)
  }
  return { ids, collection: false }
}

/**
 * What the bulk's single-document ops by non-`_id` filters may have taken: `_id`s to mark, or
 * the collection. Never throws: a failed check is reported and answers the collection.
 * @param {ReturnType<import('./sink').makeMarker>} marker
 * @param {{t: any, session: any, singles: any[], deleteFound: any[]}} state  bulkwrite.js's call state
 * @param {any} result  the BulkWriteResult (or the error's partial result)
 * @param {string} hook
 * @returns {Promise<{ids: any[], collection: boolean}>}
 */
async function checkSingles (marker, state, result, hook) {
  try {
    return await findTaken(marker, state, result)
  } catch (err) {
    marker.report(err, hook, state.t.model)
    return { ids: [], collection: true }
  }
}

module.exports = { checkSingles }
