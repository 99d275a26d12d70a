'use strict'
// Which documents does a filter match? Answered from the filter itself when it names `_id`s,
// otherwise by an `_id`-only find on the local database, bounded by the mark cap.

const { rawIdsFromFilter, cloneFilter } = require('./namedids')

/**
 * @typedef {object} Resolution
 * @property {any[]} [ids]           the matched `_id`s
 * @property {boolean} [collection]  too many to list (or unknowable): reconcile the collection
 * @property {Error} [castError]     the filter does not cast, so Mongoose will reject the write too
 * @property {boolean} [found]       the `_id`s come from a find (the filter did not name them)
 */

/**
 * Adds the discriminator key a discriminator model's queries carry (Mongoose adds it at exec
 * time, after our hook), so the find matches what the write will match.
 */
function addDiscriminatorCriteria (model, filter) {
  const mapping = model.schema && model.schema.discriminatorMapping
  if (mapping && !mapping.isRoot && mapping.key && !(mapping.key in filter)) {
    filter[mapping.key] = mapping.value
  }
  return filter
}

/**
 * The session a write runs in: its own option, else the one Mongoose's
 * `transactionAsyncLocalStorage` would attach.
 */
function sessionFor (model, explicit) {
  if (explicit) return explicit
  const store = model.db && model.db.base && model.db.base.transactionAsyncLocalStorage
  const s = store && typeof store.getStore === 'function' ? store.getStore() : null
  return (s && s.session) || undefined
}

/**
 * `_id`s matched by a cast filter, straight from the driver: no Mongoose middleware runs (ours
 * or the app's, which could narrow a find but not the write), no document bodies travel.
 */
async function findIds (model, castFilter, { session, collation, cap, timeoutMs }) {
  const coll = model.collection && model.collection.collection
  if (!coll) {
    throw new Error(`dualsync: collection "${model.collection && model.collection.collectionName}" is not open`)
  }
  const opts = { projection: { _id: 1 }, limit: cap + 1, batchSize: cap + 1, readPreference: 'primary' }
  // Bounded: a slow unindexed lookup must not hold the app's write; past the
  // bound the collection is reconciled instead (same as above the cap).
  if (timeoutMs) opts.maxTimeMS = timeoutMs
  if (session) opts.session = session
  if (collation) opts.collation = collation
  let docs
  try {
    docs = await coll.find(castFilter, opts).toArray()
  } catch (err) {
    if (isTimeLimit(err)) return { collection: true, timedOut: true }
    throw err
  }
  if (docs.length > cap) return { collection: true }
  return { ids: docs.map((d) => d._id) }
}

/**
 * How many of `ids` are in the model's collection now, read from the primary (the after-write
 * checks of which document a single-document write took).
 * @returns {Promise<number>}
 */
async function countExisting (model, ids, { session, timeoutMs } = {}) {
  const opts = { projection: { _id: 1 }, readPreference: 'primary' }
  if (timeoutMs) opts.maxTimeMS = timeoutMs // past it: reported, and the collection reconciled
  const s = sessionFor(model, session)
  if (s) opts.session = s
  const left = await model.collection.collection.find({ _id: { $in: ids } }, opts).toArray()
  return left.length
}

/** MaxTimeMSExpired (50), or a server that words it only in the message. */
function isTimeLimit (err) {
  return Boolean(err) && (err.code === 50 || err.codeName === 'MaxTimeMSExpired' || /exceeded time limit|MaxTimeMS/i.test(String(err.message)))
}

/** model → whether its `_id` is an ObjectId path (cached: asked on every write by `_id`) */
const objectIdKeyed = new WeakMap()

/**
 * True when Mongoose's cast would hand `ids` back as they are: ObjectIds for an ObjectId `_id`
 * with no setter of the app's (its cast returns any bson major's ObjectId unchanged; the only
 * setter Mongoose adds itself, `resetId`, returns query values unchanged). The common update by
 * `_id` then skips the cast, which costs more than all the rest of its hook.
 */
function castAlready (model, ids) {
  let oid = objectIdKeyed.get(model)
  if (oid === undefined) {
    const p = model.schema && model.schema.paths && model.schema.paths._id
    oid = Boolean(p) && p.instance === 'ObjectId' && !p._castFunction &&
      Array.isArray(p.setters) && p.setters.every((fn) => fn.name === 'resetId')
    objectIdKeyed.set(model, oid)
  }
  if (!oid) return false
  for (const id of ids) {
    if (id === null || typeof id !== 'object' || id._bsontype !== 'ObjectId') return false
  }
  return true
}

/**
 * What can be known about the documents `filter` matches without querying: the `_id`s it names,
 * or else the cast filter to find them with.
 * @param {object} args
 * @param {import('mongoose').Model<any>} args.model
 * @param {import('mongoose').Query<any, any>} args.query  a query of `model`, used for casting
 *   (the write's own query where there is one, so its strict/strictQuery settings apply)
 * @param {object} args.filter         the write's filter, uncast or cast
 * @param {number} args.cap            above this many `_id`s, answer `{collection: true}`
 * @param {boolean} [args.forceFind]   skip the `_id` shortcut (after an upsert, whose new `_id`
 *                                     the filter may not name)
 * @returns {Resolution & {castFilter?: object}}
 */
function prepareFilter ({ model, query, filter, cap, forceFind = false }) {
  const raw = forceFind ? null : rawIdsFromFilter(filter)
  if (raw) {
    let ids = raw
    if (!castAlready(model, raw)) {
      try {
        ids = query.cast(model, { _id: { $in: raw } })._id.$in
      } catch (castError) {
        return { castError }
      }
    }
    return ids.length > cap ? { collection: true } : { ids }
  }
  try {
    return { castFilter: query.cast(model, addDiscriminatorCriteria(model, cloneFilter(filter || {}))) }
  } catch (castError) {
    return { castError }
  }
}

/**
 * Resolves which documents `filter` matches in `model`'s collection (see prepareFilter for the
 * common arguments).
 * @param {object} args
 * @param {object} [args.session]    the write's session
 * @param {object} [args.collation]  the write's collation
 * @param {number} [args.timeoutMs]  maxTimeMS of the lookup; past it, `{collection: true}`
 * @returns {Promise<Resolution>}
 */
async function resolveFilter (args) {
  const p = prepareFilter(args)
  return p.castFilter ? findPrepared(args, p) : p
}

/**
 * The find half of resolveFilter, for a filter prepareFilter could not answer alone.
 * @param {object} args  as resolveFilter's
 * @param {{castFilter: object}} p  prepareFilter's answer
 * @returns {Promise<Resolution>}
 */
async function findPrepared (args, p) {
  const r = await findIds(args.model, p.castFilter, {
    session: sessionFor(args.model, args.session),
    collation: args.collation,
    cap: args.cap,
    timeoutMs: args.timeoutMs
  })
  return { ...r, found: true }
}

module.exports = { resolveFilter, prepareFilter, findPrepared, findIds, countExisting, sessionFor }
