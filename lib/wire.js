'use strict'
/**
 * The wire form of an op: turns a user's `{ collection, id, db }` op into the
 * compact form the native engine reads ({c, d, k, v, i}); `k` tells the type
 * of the _id, `i` marks an intent (a mark taken before the app's write).
 */
// The binding's table (src/convert.rs `kind`) is the source; __test__/binding.test.js checks this
// copy against native opKinds(). A copy, so encoding an op needs no call into the addon.
const K = Object.freeze({ OBJECT_ID: 0, STRING: 1, INT32: 2, DOUBLE: 3, INT64: 4, BSON: 5, DATE: 6, COLLECTION: 9 })

let appBson = null
/** BSON of the app's own mongodb driver, for _id types made by another bson major. */
function appBsonLib () {
  if (appBson !== null) return appBson
  appBson = false
  try {
    const mongoosePath = require.resolve('mongoose', { paths: [process.cwd(), __dirname] })
    appBson = require(mongoosePath).mongo.BSON
  } catch { /* no mongoose in the app: our own bson is the only option */ }
  return appBson
}

/**
 * BSON bytes of a document whose values may come from our bson or the app's (another major).
 * @param {object} doc
 * @returns {Uint8Array}
 * @throws {Error} with each library's reason when neither can encode it
 */
function serializeBson (doc) {
  const errors = []
  for (const lib of [require('bson'), appBsonLib()]) {
    if (!lib) continue
    try {
      return lib.serialize(doc)
    } catch (e) {
      errors.push(e.message)
    }
  }
  throw new Error(errors.join('; '))
}

function serializeId (id) {
  try {
    return serializeBson({ _id: id })
  } catch (e) {
    throw new TypeError(`id of type ${describe(id)} cannot be encoded as BSON (${e.message})`)
  }
}

function describe (v) {
  if (v === null) return 'null'
  if (typeof v !== 'object') return typeof v
  return v._bsontype || (v.constructor && v.constructor.name) || 'object'
}

/**
 * Validates and encodes one op. Throws a TypeError that says what is wrong.
 * @param {{collection?: string, id?: any, db?: string, kind?: string}} op
 * @param {string} defaultDb
 * @returns {{c: string, d: string, k: number, v?: any, i?: true}} `i`: an intent (`op.intent: true`)
 */
function encodeOp (op, defaultDb) {
  if (op === null || typeof op !== 'object') {
    throw new TypeError(`enqueue: expected an op object { collection, id, db? }, got ${describe(op)}`)
  }
  const { collection, id } = op
  if (typeof collection !== 'string' || collection.length === 0) {
    throw new TypeError(`enqueue: op.collection is required (a non-empty string), got ${describe(collection)}`)
  }
  const d = op.db === undefined || op.db === null ? defaultDb : op.db
  if (typeof d !== 'string' || d.length === 0) {
    throw new TypeError(`enqueue: op.db must be a non-empty string when given, got ${describe(op.db)}`)
  }
  if (op.kind === 'collection') return op.intent === true ? { c: collection, d, k: K.COLLECTION, i: true } : { c: collection, d, k: K.COLLECTION }
  if (id === undefined || id === null) {
    throw new TypeError(`enqueue: op.id is required for collection "${collection}" (the document's _id)`)
  }
  const { k, v } = encodeId(id, collection)
  return op.intent === true ? { c: collection, d, k, v, i: true } : { c: collection, d, k, v }
}

function encodeId (id, collection) {
  switch (typeof id) {
    case 'string': return { k: K.STRING, v: id }
    case 'number':
      if (Number.isNaN(id)) throw new TypeError(`enqueue: op.id for collection "${collection}" is NaN, which cannot identify a document`)
      return Number.isInteger(id) && id >= -2147483648 && id <= 2147483647 ? { k: K.INT32, v: id } : { k: K.DOUBLE, v: id }
    case 'bigint': return { k: K.INT64, v: id.toString() }
    case 'object': break
    default: throw new TypeError(`enqueue: op.id for collection "${collection}" has type ${typeof id}, which cannot be a MongoDB _id`)
  }
  const t = id._bsontype
  if (t === 'ObjectId' || t === 'ObjectID') return { k: K.OBJECT_ID, v: id.toHexString() }
  if (t === 'Long') return { k: K.INT64, v: id.toString() }
  if (t === 'Int32' || t === 'Double') return encodeId(id.valueOf(), collection)
  if (id instanceof Date) {
    if (Number.isNaN(id.getTime())) throw new TypeError(`enqueue: op.id for collection "${collection}" is an invalid Date`)
    return { k: K.DATE, v: id.getTime() }
  }
  if (Array.isArray(id)) throw new TypeError(`enqueue: op.id for collection "${collection}" is an array, which cannot be a MongoDB _id`)
  return { k: K.BSON, v: Buffer.from(serializeId(id)) }
}

module.exports = { serializeBson, encodeOp, K }
