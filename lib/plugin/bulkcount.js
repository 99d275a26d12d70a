'use strict'
// How many found documents a bulk's filtered ops are sure to update or delete. The post hook
// compares it with the result's matched + deleted counts: more touched than this means some op
// took a document its find did not name (a newcomer), and the collection is reconciled. So the
// count must never exceed what the ops will touch among the found documents, whatever order the
// server runs them in (the driver runs an unordered bulk's updates before its deletes, and the
// server may reorder within a batch); a count too low only costs a scan.

const { overlaps } = require('./fields')

/**
 * @typedef {object} CountedOp
 * @property {boolean} single      updateOne / replaceOne / deleteOne: touches at most one document
 * @property {boolean} deletes     deleteOne / deleteMany
 * @property {Set<string>} reads   top-level fields its filter reads (fields.js)
 * @property {Set<string>} writes  top-level fields it writes (empty for a delete)
 * @property {string[]} keys       keys of the `_id`s its find returned
 */

/**
 * Can op `w` change a document so that op `r` no longer (or newly) matches it? A delete always
 * can; an update when it writes a field `r`'s filter reads.
 */
function moves (w, r) {
  return w.deletes || overlaps(w.writes, r.reads)
}

/**
 * The found documents the ops are sure to touch, counted per op (a document two ops update is
 * touched twice). A document found by several ops counts only while none of them can move it
 * for another (`moves`): otherwise one can delete it or move it out of the other's filter before
 * that one runs, and the other then takes a newcomer in its place with the counts still equal.
 * Such a document counts 0; one found by a single op always counts. A single-document op counts
 * 1 when one of its candidates is sure to still match when it runs; which one it takes is the
 * post-write check's question (bulkcheck.js).
 *
 * Not covered (ARCHITECTURE.md, known limits): a chain inside one bulk, where an op moves a
 * document it found into the filter of an op that did not find it, which then moves it out of
 * two or more other ops' filters, while a newcomer lands.
 * @param {CountedOp[]} ops
 * @returns {number}
 */
function sureMatches (ops) {
  const byKey = new Map() // key → indexes of the ops that found it
  ops.forEach((op, i) => {
    for (const k of op.keys) {
      const list = byKey.get(k)
      if (list) {
        if (list[list.length - 1] !== i) list.push(i)
      } else {
        byKey.set(k, [i])
      }
    }
  })
  const pairs = new Map() // "i,j" → whether either can move a document for the other
  const conflict = (i, j) => {
    const key = i < j ? `${i},${j}` : `${j},${i}`
    let c = pairs.get(key)
    if (c === undefined) {
      c = moves(ops[i], ops[j]) || moves(ops[j], ops[i])
      pairs.set(key, c)
    }
    return c
  }
  const sure = (k) => {
    const list = byKey.get(k)
    for (let a = 0; a < list.length; a++) {
      for (let b = a + 1; b < list.length; b++) if (conflict(list[a], list[b])) return false
    }
    return true
  }
  let matched = 0
  for (const op of ops) {
    const n = op.keys.filter(sure).length
    matched += op.single ? Math.min(1, n) : n
  }
  return matched
}

module.exports = { sureMatches }
