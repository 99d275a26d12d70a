'use strict'
// The plugin's side of the sink: validating it, naming a model's collection and database,
// emitting marks, and reporting errors without ever throwing into the app's write.

const { holdUntilTransactionEnds } = require('./txn')

const DEFAULT_QUERY_MARK_CAP = 10000
const DEFAULT_QUERY_MARK_TIMEOUT_MS = 5000
const DEFAULT_OPEN_WAIT_MS = 10000 // Mongoose's default bufferTimeoutMS

/**
 * @typedef {object} Target  where marks for one model go
 * @property {import('mongoose').Model<any>} model
 * @property {string} collection
 * @property {string} modelName
 */

function checkSink (sink) {
  if (!sink || typeof sink !== 'object') throw new TypeError('createPlugin(sink): sink must be an object')
  for (const fn of ['mark', 'isExcluded', 'onError']) {
    if (typeof sink[fn] !== 'function') throw new TypeError(`createPlugin(sink): sink.${fn} must be a function`)
  }
  const cap = sink.queryMarkCap === undefined ? DEFAULT_QUERY_MARK_CAP : sink.queryMarkCap
  if (!Number.isInteger(cap) || cap < 1) {
    throw new TypeError(`createPlugin(sink): sink.queryMarkCap must be a positive integer, got ${String(sink.queryMarkCap)}`)
  }
  const timeoutMs = sink.queryMarkTimeoutMs === undefined ? DEFAULT_QUERY_MARK_TIMEOUT_MS : sink.queryMarkTimeoutMs
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1) {
    throw new TypeError(`createPlugin(sink): sink.queryMarkTimeoutMs must be a positive integer (milliseconds), got ${String(sink.queryMarkTimeoutMs)}`)
  }
  return { cap, timeoutMs }
}

/** A key for the common `_id` types, so one hook's marks name each document once; null: keep. */
function dedupeKey (id) {
  if (typeof id === 'string') return `s${id}`
  if (typeof id === 'number') return `n${id}`
  if (id._bsontype === 'ObjectId' && typeof id.toHexString === 'function') return `o${id.toHexString()}`
  return null
}

/**
 * Resolves once `conn` is open, or false after `ms` (the write could not run before the open
 * either; Mongoose would buffer it just as long). No 'error' listener: Mongoose emits connection errors only when someone
 * listens, and one added here could be gone by then, turning the error into a crash.
 */
function whenOpen (conn, ms) {
  return new Promise((resolve) => {
    const onOpen = () => {
      clearTimeout(timer)
      resolve(true)
    }
    const timer = setTimeout(() => {
      conn.removeListener('open', onOpen)
      resolve(false)
    }, ms)
    if (typeof timer.unref === 'function') timer.unref()
    conn.once('open', onOpen)
  })
}

/**
 * Wraps a sink for the hooks.
 * @param {object} sink see createPlugin
 */
function makeMarker (sink) {
  const { cap, timeoutMs } = checkSink(sink)
  /** @type {WeakMap<object, {of: object, t: Target | null}>} model → its target */
  const targets = new WeakMap()

  function report (err, hook, model) {
    const error = err instanceof Error ? err : new Error(String(err))
    const context = { hook }
    if (model && typeof model.modelName === 'string') context.model = model.modelName
    // Where the lost capture belongs, so the collection can be reconciled.
    const coll = model && model.collection && (model.collection.collectionName || model.collection.name)
    if (typeof coll === 'string') context.collection = coll
    if (model && model.db && typeof model.db.name === 'string' && model.db.name) context.db = model.db.name
    try {
      sink.onError(error, context)
    } catch {
      // onError must not throw; if it does anyway, the app's write still must not see it
    }
  }

  /**
   * The marks target of a model, or null when its writes are not synced (not a collection
   * model, or an excluded collection).
   * @returns {Target | null}
   */
  function target (model, hook) {
    if (!model || typeof model.modelName !== 'string' || !model.collection) return null
    // Known from an earlier write unless the model moved to another collection object
    // (Model.useConnection): every write asks, and the answer rarely changes.
    const known = targets.get(model)
    if (known !== undefined && known.of === model.collection) return known.t
    const collection = model.collection.collectionName || model.collection.name
    if (typeof collection !== 'string') return null
    try {
      if (sink.isExcluded(collection)) return remember(model, null)
    } catch (err) {
      report(err, hook, model) // unsure: sync it rather than lose it (and ask again next time)
      return { model, collection, modelName: model.modelName }
    }
    return remember(model, { model, collection, modelName: model.modelName })
  }

  function remember (model, t) {
    targets.set(model, { of: model.collection, t })
    return t
  }

  /**
   * The database name of a target's connection. Known synchronously once the connection is
   * open; before that (a write buffered during connect) waits for it, bounded like Mongoose's
   * own buffering.
   * @returns {string | null | Promise<string | null>}
   */
  function dbName (t) {
    const conn = t.model.db
    if (conn && conn.name) return conn.name
    if (!conn || typeof conn.once !== 'function') return null
    const wait = Number(t.model.schema && t.model.schema.options && t.model.schema.options.bufferTimeoutMS) ||
      DEFAULT_OPEN_WAIT_MS
    return whenOpen(conn, wait).then(() => conn.name || null)
  }

  /**
   * Settles once the target's connection is open (or the wait gave up): at once, with no
   * promise, in the usual case of an open connection.
   * @returns {void | Promise<unknown>}
   */
  function ready (t) {
    const db = dbName(t)
    return db && typeof db.then === 'function' ? db : undefined
  }

  function emit (ops, hook, model) {
    if (ops.length === 0) return
    try {
      sink.mark(ops)
    } catch (err) {
      report(err, hook, model)
    }
  }

  /**
   * Marks documents (and/or the whole collection) of a target. Never throws. Post and error
   * marks of a write whose session is in a transaction are sent once the transaction ends
   * (txn.js); pre-write marks (intents) always go at once.
   * @param {Target} t
   * @param {Iterable<any>} ids
   * @param {{collection?: boolean, hook: string, session?: any}} opts  `session`: the write's
   *   ClientSession, if any
   * @returns {void | Promise<void>}
   */
  function mark (t, ids, { collection = false, hook, session }) {
    const db = dbName(t)
    if (db && typeof db.then === 'function') return db.then((name) => markIn(t, name, ids, collection, hook, session))
    return markIn(t, db, ids, collection, hook, session)
  }

  function markIn (t, db, ids, collection, hook, session) {
    if (!db) {
      report(new Error(`dualsync: database of model "${t.modelName}" unknown (connection not open); marks lost`), hook, t.model)
      return
    }
    const ops = []
    // Marks taken before the write are intents: the engine holds them until
    // the post mark arrives (or a timeout), so it never re-reads (or scans
    // the collection) too early.
    // (Mongoose names the hooks before a write `pre:<op>`.)
    const intent = typeof hook === 'string' && hook.startsWith('pre:')
    if (collection) ops.push(intent ? { collection: t.collection, db, kind: 'collection', intent } : { collection: t.collection, db, kind: 'collection' })
    if (ids.length === 1) {
      // The common case (one document): nothing to dedupe.
      const id = ids[0]
      if (id !== undefined && id !== null) ops.push(docOp(t.collection, db, id, intent))
    } else {
      pushDistinct(ops, ids, t.collection, db, intent)
    }
    if (ops.length === 0) return
    if (!intent && holdUntilTransactionEnds(session, () => emit(ops, hook, t.model))) return
    emit(ops, hook, t.model)
  }

  /**
   * What a hook returns for a mark: nothing once it is done (the usual case: Mongoose then
   * runs the write without waiting a tick), else a promise that never rejects.
   * @param {void | Promise<unknown>} result  of `mark` (or any step of a hook)
   * @returns {void | Promise<void>}
   */
  function hookResult (result, hook, model) {
    if (!result || typeof result.then !== 'function') return undefined
    return result.then(() => undefined, (err) => report(err, hook, model))
  }

  return { cap, timeoutMs, report, target, mark, ready, hookResult }
}

/** Appends one mark per distinct `_id` of `ids` (a hook may name a document twice). */
function pushDistinct (ops, ids, collection, db, intent) {
  const seen = new Set()
  for (const id of ids) {
    if (id === undefined || id === null) continue
    const k = dedupeKey(id)
    if (k !== null) {
      if (seen.has(k)) continue
      seen.add(k)
    }
    ops.push(docOp(collection, db, id, intent))
  }
}

/** One document's mark; `intent` is present only when true (the sink's contract: `intent: true` or absent). */
function docOp (collection, db, id, intent) {
  return intent ? { collection, db, id, intent } : { collection, db, id }
}

module.exports = { makeMarker, DEFAULT_QUERY_MARK_CAP }
