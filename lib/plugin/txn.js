'use strict'
// Post-write marks of writes inside a transaction wait for the transaction to end.
//
// A write in a transaction stays invisible outside it until the commit. Its post mark tells the
// engine "the write is done, re-read now": sent when the operation returns, it would release the
// held pre-write intent and the worker could read the pre-commit state, with nothing marking the
// document again. So while the write's session is in a transaction its post (and error) marks
// are kept on the session and sent once the transaction ends. The pre-write intents are sent at
// once as always: they are the durable record that covers a crash before the post marks go.
//
// The end of a transaction is seen by wrapping, once per session object, the three driver
// methods that end one: `commitTransaction`, `abortTransaction` and `endSession` (which aborts an
// open transaction). The driver's own `withTransaction` (and Mongoose's `connection.transaction()`,
// built on it) calls them through the session object, so its retries are covered: an attempt
// that is aborted sends its marks then, the committed attempt sends its marks after the commit.
//
// Marks are sent whatever the outcome:
// - after a commit: the re-read sees the committed state;
// - after an abort: the re-read finds what Atlas already has (harmless), and it releases the held
//   intents now instead of after their timeout, so flush() and the journal checkpoint move on;
// - after a failed commit: the outcome may be unknown (the commit can have applied, or be retried
//   by `withTransaction`), so they are sent and also kept to be sent again after the session's next
//   commit, abort or end.

/** @typedef {{send: () => void}} Held  one hook's marks, ready to send */

/** session -> { pending: Held[], again: Held[] } */
const tracked = new WeakMap()

/**
 * True when `session` (a driver ClientSession) is inside a transaction. Never throws.
 * @param {any} session
 * @returns {boolean}
 */
function inTransaction (session) {
  try {
    return Boolean(session) && typeof session.inTransaction === 'function' && session.inTransaction() === true
  } catch {
    return false
  }
}

function sendAll (list) {
  for (const held of list) held.send() // each send reports its own failures (sink.js emit)
}

/** The transaction ended: send what it held; keep it for the next end when told to. */
function settle (state, keep) {
  const list = state.again.concat(state.pending)
  state.pending = []
  state.again = keep ? list : []
  sendAll(list)
}

/** Runs `after(ok)` once the session's `name` method settles, before its caller resumes. */
function wrap (session, name, after) {
  const original = session[name]
  session[name] = function dualsyncTransactionEnd (...args) {
    let result
    try {
      result = original.apply(this, args)
    } catch (err) {
      after(false)
      throw err
    }
    if (!result || typeof result.then !== 'function') {
      after(true)
      return result
    }
    return result.then((value) => {
      after(true)
      return value
    }, (err) => {
      after(false)
      throw err
    })
  }
}

function track (session) {
  let state = tracked.get(session)
  if (state) return state
  for (const name of ['commitTransaction', 'abortTransaction', 'endSession']) {
    if (typeof session[name] !== 'function') return null
  }
  state = { pending: [], again: [] }
  tracked.set(session, state)
  wrap(session, 'commitTransaction', (ok) => settle(state, !ok))
  wrap(session, 'abortTransaction', () => settle(state, false))
  wrap(session, 'endSession', () => settle(state, false))
  return state
}

/**
 * Keeps `send` until `session`'s transaction ends, when the session is in one.
 * @param {any} session  the write's ClientSession (or undefined)
 * @param {() => void} send  sends the marks; must not throw
 * @returns {boolean} true when held; false: not in a transaction, send now
 */
function holdUntilTransactionEnds (session, send) {
  if (!inTransaction(session)) return false
  const state = track(session)
  if (!state) return false // a session we cannot watch: sending now is the old behaviour
  state.pending.push({ send })
  return true
}

module.exports = { holdUntilTransactionEnds, inTransaction }
