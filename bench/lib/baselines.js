'use strict'
// The drain baselines shared by `drain` and `link`: (a) a raw driver loop of batched
// replace-upserts with the documents in memory, (b) the old middleware's pipeline
// (array → setInterval 100 ms → Promise.all of 100 single replaceOne upserts).

/**
 * (a) Sends `docs` to `coll` as bulkWrite batches of `batch` replaceOne-upserts, `inFlight`
 * batches at a time.
 * @returns {Promise<{docs: number, seconds: number, docsPerSec: number}>}
 */
async function rawUpserts (coll, docs, { batch = 100, inFlight = 1 } = {}) {
  const batches = []
  for (let i = 0; i < docs.length; i += batch) batches.push(docs.slice(i, i + batch))
  const t0 = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < batches.length) {
      const b = batches[next++]
      await coll.bulkWrite(b.map((d) => ({ replaceOne: { filter: { _id: d._id }, replacement: d, upsert: true } })), { ordered: false })
    }
  }))
  const seconds = (performance.now() - t0) / 1000
  return { docs: docs.length, seconds, docsPerSec: docs.length / seconds }
}

/**
 * (b) The old pipeline's worker: every 100 ms (unless the previous tick still runs) it takes
 * up to 100 queued ops and sends them as parallel single replaceOne upserts. Stops when the
 * queue is empty or, with `maxMs`, at the first tick after that much time (over a slow link
 * it would take many minutes; its rate is then what it did in that window).
 * @param {import('mongodb').Collection} target
 * @param {Array<{documentId: any, data: object}>} queue consumed
 * @param {{maxMs?: number}} [opts]
 * @returns {Promise<{docs: number, seconds: number, docsPerSec: number, timeBound: boolean}>}
 */
function oldPipeline (target, queue, { maxMs = Infinity } = {}) {
  const total = queue.length
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    let processing = false
    let done = 0
    const finish = (timeBound) => {
      clearInterval(timer)
      const seconds = (performance.now() - t0) / 1000
      resolve({ docs: done, seconds, docsPerSec: done / seconds, timeBound, total })
    }
    const timer = setInterval(async () => {
      if (processing) return
      if (queue.length === 0) return finish(false)
      if (performance.now() - t0 >= maxMs) return finish(true)
      processing = true
      const batch = queue.splice(0, 100)
      try {
        await Promise.all(batch.map((op) => target.replaceOne({ _id: op.documentId }, op.data, { upsert: true })))
        done += batch.length
      } catch (e) {
        clearInterval(timer)
        reject(e)
      }
      processing = false
    }, 100)
  })
}

module.exports = { rawUpserts, oldPipeline }
