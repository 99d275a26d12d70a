'use strict'
// The documents every scenario writes: one shape, about 385 bytes of BSON, with the field
// types an app has (strings, numbers, dates, a small array, a sub-document).

const { ObjectId } = require('mongodb')

const WORDS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel']

/**
 * @param {number} i sequence number (makes `key` unique and `group` hold 10 consecutive docs)
 * @returns {object}
 */
function makeDoc (i) {
  return {
    _id: new ObjectId(),
    key: `k${i}`,
    group: Math.floor(i / 10),
    name: `customer ${i} ${WORDS[i % WORDS.length]}`,
    email: `user${i}@example.com`,
    amount: (i * 37) % 1000 + 0.25,
    count: i,
    active: i % 3 !== 0,
    tags: [WORDS[i % 8], WORDS[(i + 3) % 8]],
    address: { street: `${i} Main Street`, city: 'Springfield', zip: String(10000 + (i % 90000)) },
    createdAt: new Date(1700000000000 + i * 1000),
    note: 'lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt'
  }
}

/** Mongoose schema definition matching makeDoc (the `_id` is Mongoose's own). */
function schemaDefinition () {
  return {
    key: String,
    group: Number,
    name: String,
    email: String,
    amount: Number,
    count: Number,
    active: Boolean,
    tags: [String],
    address: { street: String, city: String, zip: String },
    createdAt: Date,
    note: String
  }
}

/** Inserts `n` makeDoc documents with insertMany in batches; returns their `_id`s. */
async function seed (collection, n, { from = 0, batch = 1000 } = {}) {
  const ids = []
  for (let i = 0; i < n; i += batch) {
    const docs = []
    for (let j = i; j < Math.min(n, i + batch); j++) docs.push(makeDoc(from + j))
    await collection.insertMany(docs, { ordered: false })
    for (const d of docs) ids.push(d._id)
  }
  return ids
}

module.exports = { makeDoc, schemaDefinition, seed }
