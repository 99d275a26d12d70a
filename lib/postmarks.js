'use strict'
// Post-write marks ride with the next native call instead of making one of their own.
//
// A Mongoose write makes two marks: the intent before it (journaled at once: it is the durable
// record that covers a crash before the write's post hook) and the post mark after it (tells
// the engine the write has landed, so the held intent may be re-read now). The post mark adds
// no durability: its write is already covered by the intent, which recovery replays as a plain
// mark. So it need not cost the write a native call of its own: it waits here, in memory, and
// goes with the next intent (a sequential workload makes one native call per write), or at the
// end of this turn of the event loop (setImmediate) when no write follows, or before anything
// that must see it (flush, metrics, close). Each call into the addon is a cold path between
// the app's own work (~15 µs measured in place against ~2.5 µs in a tight loop), so this
// halves what capture adds to a write.
//
// With the capture ring there is no call to save: a post mark goes into the ring at once, and
// waits here only when the ring refuses it (a namespace it has not learnt, the ring full). While
// any wait here, later marks wait behind them too, so marks reach the engine in order.

/** @typedef {{encoded: object[], ctx: object}} Group  one hook's encoded marks and its error context */

class PendingPosts {
  /**
   * @param {(encoded: object[]) => number} send  the native enqueue; throws a coded error
   * @param {(err: Error, ctx: object) => void} onError  reports a group whose marks were not kept
   * @param {(encoded: object[]) => boolean} [direct]  sends without a native call (the capture
   *   ring) when it can, else answers false having sent nothing; never throws
   */
  constructor (send, onError, direct = () => false) {
    this._send = send
    this._onError = onError
    this._direct = direct
    /** @type {Group[]} */
    this._groups = []
    this._scheduled = false
    this._flushSoon = () => {
      this._scheduled = false
      this.flush()
    }
  }

  /** Keeps one hook's post marks until the next send (at the latest the end of this turn). */
  add (encoded, ctx) {
    if (this._groups.length === 0 && this._direct(encoded)) return
    this._groups.push({ encoded, ctx })
    if (!this._scheduled) {
      this._scheduled = true
      setImmediate(this._flushSoon)
    }
  }

  /** How many marks wait. */
  get size () {
    let n = 0
    for (const g of this._groups) n += g.encoded.length
    return n
  }

  /** Sends the waiting post marks now (one native call). Never throws. */
  flush () {
    if (this._groups.length === 0) return
    this._sendGroups(this._take())
  }

  /**
   * Sends `encoded` (an intent) with the waiting post marks before it, in one native call.
   * Post marks go first: they are older. Never throws.
   */
  sendWith (encoded, ctx) {
    if (this._groups.length === 0 && this._direct(encoded)) return
    const groups = this._take()
    groups.push({ encoded, ctx })
    this._sendGroups(groups)
  }

  _take () {
    const groups = this._groups
    this._groups = []
    return groups
  }

  _sendGroups (groups) {
    // (Not flatMap: 4× slower for the usual one or two groups; this is every write's path.)
    let all = groups[0].encoded
    if (groups.length === 2) all = all.concat(groups[1].encoded)
    else if (groups.length > 2) {
      all = []
      for (const g of groups) for (const e of g.encoded) all.push(e)
    }
    try {
      this._send(all)
      return
    } catch (err) {
      // A mark the engine refuses (invalid) fails its whole call before anything is journaled:
      // send each hook's marks on their own, so only the bad one is lost and each failure names
      // its own hook. Any other failure (journal, closed) would fail each call alike, and the
      // engine has already counted the marks as lost: report each group once, no retry.
      if (groups.length === 1 || !err || err.code !== 'ERR_SYNC_INVALID') {
        for (const g of groups) this._onError(err, g.ctx)
        return
      }
    }
    for (const g of groups) {
      try {
        this._send(g.encoded)
      } catch (err) {
        this._onError(err, g.ctx)
      }
    }
  }
}

module.exports = { PendingPosts }
