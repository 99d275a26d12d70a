'use strict'
/**
 * Polls a condition until it holds (or fails after a deadline). This is
 * synchronisation on an observable state, not a fixed sleep.
 * @param {string} what description used in the timeout error
 * @param {() => any|Promise<any>} predicate
 * @param {{timeoutMs?: number, intervalMs?: number}} [opts]
 */
async function waitFor (what, predicate, { timeoutMs = 60000, intervalMs = 25 } = {}) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const v = await predicate()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`)
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

module.exports = { waitFor }
