'use strict'
// Which top-level fields a filter reads and an update writes. bulkwrite.js uses it to know when
// one op of a bulk can move a document out of another op's filter (so that document must count
// once, not once per op). Answers err towards "all fields": that only costs a collection scan.

/** Every field: the answer when the shape is not understood. */
const ALL = '*'

/** Top-level field of a dotted path (`items.0.qty` → `items`). */
const top = (path) => String(path).split('.')[0]

/** Adds a path's top-level field to `out`, and the field an alias of it names. */
function addField (out, path, aliases) {
  const t = top(path)
  out.add(t)
  if (aliases && Object.prototype.hasOwnProperty.call(aliases, t)) out.add(top(aliases[t]))
}

/**
 * Top-level fields a filter's conditions read, alias names translated. `$and`/`$or`/`$nor` are
 * walked; any other top-level operator (`$expr`, `$where`, `$text`, `$jsonSchema`, ...) reads
 * anything.
 * @param {object} filter
 * @param {object} [aliases]  the schema's alias → path map
 * @returns {Set<string>}
 */
function filterReads (filter, aliases) {
  const out = new Set()
  const walk = (f) => {
    if (!f || typeof f !== 'object' || Array.isArray(f)) return
    for (const key of Object.keys(f)) {
      if (key === '$and' || key === '$or' || key === '$nor') {
        if (Array.isArray(f[key])) f[key].forEach(walk)
        else out.add(ALL)
      } else if (key === '$comment') {
        // no condition
      } else if (key[0] === '$') {
        out.add(ALL)
      } else {
        addField(out, key, aliases)
      }
    }
  }
  walk(filter)
  return out
}

/**
 * Top-level fields an update writes, alias names translated. A replacement document or an
 * aggregation pipeline rewrites the document: all fields. `extra`: fields Mongoose writes on
 * every update of the model (timestamps).
 * @param {object|any[]} update
 * @param {{replace?: boolean, aliases?: object, extra?: string[]}} [opts]
 * @returns {Set<string>}
 */
function updateWrites (update, { replace = false, aliases = {}, extra = [] } = {}) {
  const out = new Set(extra)
  const add = (path) => addField(out, path, aliases)
  if (replace || Array.isArray(update) || !update || typeof update !== 'object') {
    out.add(ALL)
    return out
  }
  for (const [key, value] of Object.entries(update)) {
    if (key[0] !== '$') {
      add(key) // Mongoose wraps plain keys in $set
      continue
    }
    if (!value || typeof value !== 'object') continue
    for (const [path, arg] of Object.entries(value)) {
      add(path)
      if (key === '$rename' && typeof arg === 'string') add(arg)
    }
  }
  return out
}

/** Fields Mongoose's timestamps option adds to every update of `schema`. */
function timestampFields (schema) {
  const ts = schema && schema.options && schema.options.timestamps
  if (!ts) return []
  const name = (v, dflt) => (typeof v === 'string' ? v : v === false ? null : dflt)
  const o = ts === true ? {} : ts
  return [name(o.createdAt, 'createdAt'), name(o.updatedAt, 'updatedAt')].filter(Boolean)
}

/** True when a field in `writes` is one `reads` depends on. */
function overlaps (writes, reads) {
  if (writes.size === 0 || reads.size === 0) return false
  if (writes.has(ALL) || reads.has(ALL)) return true
  for (const w of writes) if (reads.has(w)) return true
  return false
}

module.exports = { ALL, filterReads, updateWrites, timestampFields, overlaps }
