'use strict'
// What a test server can do, found by trying it on the server itself (never by its name), so a
// suite that needs a capability runs where it exists and says why it does not run elsewhere.

const crypto = require('node:crypto')
const { MongoClient, Decimal128, BSON } = require('mongodb')

async function withProbeDb (uri, fn) {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000 })
  const db = client.db(`probe_${Date.now().toString(36)}_${crypto.randomBytes(3).toString('hex')}`)
  try {
    await client.connect()
    return await fn(db, client)
  } finally {
    await db.dropDatabase().catch(() => {})
    await client.close()
  }
}

function describeError (err) {
  const name = err.codeName || err.code || err.name
  return `${name}: ${err.message}`
}

/**
 * Does the server run multi-document transactions: a write inside one stays invisible to other
 * sessions until the commit, and is there after it?
 * @param {string} uri  server URI (no database)
 * @returns {Promise<{supported: boolean, reason: string}>} `reason` says what was seen
 */
async function probeTransactions (uri) {
  try {
    return await withProbeDb(uri, async (db, client) => {
      const coll = db.collection('probe')
      // The collection exists first: creating one inside a transaction is a capability of its own.
      await coll.insertOne({ _id: 'seed' })
      const session = client.startSession()
      try {
        session.startTransaction()
        await coll.insertOne({ _id: 'in-transaction' }, { session })
        if (await coll.countDocuments({ _id: 'in-transaction' }) !== 0) {
          return { supported: false, reason: 'a write inside a transaction was visible outside it before the commit' }
        }
        await session.commitTransaction()
      } finally {
        await session.endSession().catch(() => {})
      }
      if (await coll.countDocuments({ _id: 'in-transaction' }) !== 1) {
        return { supported: false, reason: 'a committed transaction\'s write is missing' }
      }
      return { supported: true, reason: 'a write in a transaction stays invisible until the commit, then appears' }
    })
  } catch (err) {
    return { supported: false, reason: `the server refused a transaction (${describeError(err)})` }
  }
}

/**
 * Values FerretDB v1 refuses, each as the fields of a document to store and read back. Each takes
 * the driver module whose BSON classes to use (the app's own, for writes through its Mongoose).
 */
const VALUE_SHAPES = {
  decimal128: (driver = { Decimal128 }) => ({ price: driver.Decimal128.fromString('1234567890.123456789') }),
  nestedArrays: () => ({ grid: [[1, 2], [3, [4, 5]], []] }),
  dottedKeys: () => ({ meta: { 'a.b': 1, 'x.y.z': { 'c.d': 'e' } } }),
  dollarKeys: () => ({ meta: { $price: 3, nested: { $op: 'literal' } } })
}

/**
 * Which of VALUE_SHAPES the server stores and returns unchanged (same BSON bytes).
 * @param {string} uri  server URI (no database)
 * @returns {Promise<Record<string, {supported: boolean, reason: string}>>}
 */
/** PostgreSQL restarting its backends after one crashed (DocumentDB test bed). */
function recovering (err) {
  return Boolean(err) && /not yet accepting connections|in recovery mode/.test(err.message || '')
}

async function probeValues (uri) {
  return withProbeDb(uri, async (db) => {
    const coll = db.collection('values')
    const out = {}
    for (const [name, make] of Object.entries(VALUE_SHAPES)) {
      const doc = { _id: name, ...make() }
      try {
        await coll.insertOne(doc)
        const back = await coll.findOne({ _id: name }, { raw: true })
        const same = back && Buffer.from(back).equals(Buffer.from(BSON.serialize(doc)))
        out[name] = same
          ? { supported: true, reason: 'stored and read back byte for byte' }
          : { supported: false, reason: 'stored, but read back different' }
      } catch (err) {
        // A server in crash recovery is a fault, not a refusal: it must fail the run, never
        // turn into a skipped test. (A closed connection alone is FerretDB's answer to a value
        // it cannot store, so that one stays a refusal.)
        if (recovering(err)) throw err
        out[name] = { supported: false, reason: `the server refused it (${describeError(err)})` }
      }
    }
    return out
  })
}

module.exports = { probeTransactions, probeValues, VALUE_SHAPES }
