'use strict'
// The café workload for `catchup`: what one POS request does, as Mongoose calls on the app's
// local database (captured by the plugin): open a bill, add two items by `_id`, read it back.
// Run without HTTP so the ratio is the database's and the engine's, not Express'.

const { nowNs } = require('./stats')

/** Defines the models on a Mongoose instance (the plugin must be registered before). */
function cafeModels (m) {
  const Bill = m.model('CafeBill', new m.Schema({ table: Number, total: Number, items: [String], note: String }), 'cafe_bills')
  return { Bill }
}

/** One request: create + 2 × updateOne by `_id` + findById. */
async function request ({ Bill }, i) {
  const b = await Bill.create({ table: i % 20, total: 0, items: [], note: 'open' })
  await Bill.updateOne({ _id: b._id }, { $inc: { total: 3.5 }, $push: { items: 'espresso' } })
  await Bill.updateOne({ _id: b._id }, { $inc: { total: 4.2 }, $push: { items: 'croissant' } })
  await Bill.findById(b._id).lean()
}

/**
 * Runs requests back to back (`clients` concurrent loops) for `ms`.
 * @returns {Promise<{latMs: number[], requests: number, seconds: number}>}
 */
async function runFor (models, ms, { clients = 2, from = 0 } = {}) {
  const latMs = []
  const until = performance.now() + ms
  const t0 = performance.now()
  let i = from
  await Promise.all(Array.from({ length: clients }, async () => {
    while (performance.now() < until) {
      const s = nowNs()
      await request(models, i++)
      latMs.push((nowNs() - s) / 1e6)
    }
  }))
  return { latMs, requests: latMs.length, seconds: (performance.now() - t0) / 1000 }
}

module.exports = { cafeModels, request, runFor }
