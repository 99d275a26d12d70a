'use strict'
// The `_id`s a filter or a document names (filter → `_id`s, document → `_id`), without copying
// document bodies. Not to be confused with lib/wire.js, which encodes ops for the binding.

const hasOwn = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key)

/** True for `{}` literals (and null-prototype objects); false for ObjectId, Date, Buffer, documents... */
function isPlainObject (v) {
  if (v === null || typeof v !== 'object') return false
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

function isOperatorObject (v) {
  if (!isPlainObject(v)) return false
  for (const k in v) {
    if (k[0] === '$') return true
  }
  return false
}

/** A value usable as an exact `_id` (not a pattern, not null, not an operator object). */
function isIdValue (v) {
  return v !== undefined && v !== null && !(v instanceof RegExp) && !Array.isArray(v) && !isOperatorObject(v)
}

/**
 * The raw `_id` values a filter pins its match to through a top-level `_id` condition
 * (`{_id: v}`, `{_id: {$eq: v}}`, `{_id: {$in: [...]}}`), or null when it does not (a find is
 * needed then). Other top-level keys are ANDed with it, so the values stay a superset of the
 * documents the filter matches.
 * @param {object} filter an uncast query filter
 * @returns {any[] | null}
 */
function rawIdsFromFilter (filter) {
  if (!filter || typeof filter !== 'object' || !hasOwn(filter, '_id')) return null
  const cond = filter._id
  if (isOperatorObject(cond)) {
    if (hasOwn(cond, '$eq')) return isIdValue(cond.$eq) ? [cond.$eq] : null
    if (hasOwn(cond, '$in') && Array.isArray(cond.$in) && cond.$in.every(isIdValue)) return cond.$in.slice()
    return null
  }
  if (isPlainObject(cond) && Object.keys(cond).length === 0) return null
  return isIdValue(cond) ? [cond] : null
}

/**
 * True when the filter names exactly one `_id` by equality (`{_id: v}` or
 * `{_id: {$eq: v}}`): an upsert through it inserts that `_id`.
 * @param {object} filter
 * @returns {boolean}
 */
function namesOneId (filter) {
  if (!filter || typeof filter !== 'object' || !hasOwn(filter, '_id')) return false
  const cond = filter._id
  if (isOperatorObject(cond)) return Object.keys(cond).length === 1 && hasOwn(cond, '$eq') && isIdValue(cond.$eq)
  return isIdValue(cond) && !(isPlainObject(cond) && Object.keys(cond).length === 0)
}

/**
 * Copies the containers (plain objects, arrays) of a filter so that Mongoose's in-place casting
 * cannot alter the app's own filter; leaves (ObjectId, Date, RegExp, documents...) are shared.
 * @param {any} value
 * @returns {any}
 */
function cloneFilter (value) {
  if (Array.isArray(value)) return value.map(cloneFilter)
  if (isPlainObject(value)) {
    const out = {}
    for (const k of Object.keys(value)) out[k] = cloneFilter(value[k])
    return out
  }
  return value
}

/** True for a Mongoose document (top-level or embedded). */
function isMongooseDoc (v) {
  return v !== null && typeof v === 'object' && typeof v.$__ === 'object' && typeof v.get === 'function'
}

/**
 * The stored `_id` of a Mongoose document or plain object (getters bypassed).
 * @param {any} doc
 * @returns {any} undefined when there is none
 */
function docId (doc) {
  if (doc === null || typeof doc !== 'object') return undefined
  let id
  if (!isMongooseDoc(doc)) id = doc._id
  else {
    // The stored value itself (what `get` without getters returns, at a fraction of its cost:
    // this runs in every save)
    const stored = doc._doc
    id = stored !== null && typeof stored === 'object' && stored._id !== undefined ? stored._id : doc.get('_id', null, { getters: false })
  }
  return id === null ? undefined : id
}

/**
 * The `_id` a document about to be inserted through `model` will have. A plain object without
 * one gets the schema's default `_id` assigned now, so the mark written before the insert names
 * the document the insert creates. A given `_id` is cast the way Mongoose will cast it (unless
 * the insert is `lean`, which sends it as is).
 * @param {import('mongoose').Model<any>} model
 * @param {any} doc
 * @param {boolean} lean
 * @returns {any} undefined when no `_id` can be known in advance
 */
function ensureInsertId (model, doc, lean) {
  if (doc === null || typeof doc !== 'object') return undefined
  if (isMongooseDoc(doc)) return docId(doc)
  if (doc._id !== undefined && doc._id !== null) {
    if (lean) return doc._id
    try {
      return model.castObject({ _id: doc._id })._id
    } catch {
      return undefined // Mongoose will reject this document too: nothing gets inserted
    }
  }
  const idPath = model.schema.path('_id')
  if (!idPath || typeof idPath.getDefault !== 'function') return undefined
  const id = idPath.getDefault(doc, false)
  if (id === undefined || id === null) return undefined
  doc._id = id
  return id
}

/** A comparable key for an `_id` (ObjectIds by hex; others by type and value). */
function idKey (id) {
  if (id && typeof id.toHexString === 'function') return `oid:${id.toHexString()}`
  if (id instanceof Date) return `date:${id.getTime()}`
  if (id && typeof id === 'object') return `obj:${JSON.stringify(id)}`
  return `${typeof id}:${String(id)}`
}

module.exports = { idKey, rawIdsFromFilter, namesOneId, cloneFilter, docId, ensureInsertId, isMongooseDoc, isPlainObject }
