// Random Mongoose write operations for the convergence property test: fast-check arbitraries
// of readable op descriptors, and an executor that runs them through a model set.
//
// Descriptors are plain data. `_id` values are written as slots `#0`..`#3` of a small per-model
// pool (so operations keep hitting the same documents: coalescing, delete/re-create, upsert
// races); each descriptor prints as the Mongoose call it makes, e.g.
//   Num.updateOne({"_id":"#2"}, {"$inc":{"n":3}}, {upsert:true})
import fc from 'fast-check'
import testbed from '../../scripts/testbed.js'

/**
 * Sort every findOneAndDelete carries, on servers that crash without one (else undefined).
 * DocumentDB b2e220c (extension 0.108) kills its PostgreSQL backend (SIGSEGV, then "the database
 * system is in recovery mode") on a findAndModify `remove` with a non-`_id` filter after one with
 * an `_id` filter on the same collection and connection: both reuse one cached plan
 * (DeleteOneInternal's QUERY_DELETE_ONE_ID_RETURN_DOCUMENT) although their parameters differ.
 * Reproduced in plain SQL (two documentdb_api.find_and_modify calls in one psql session). A sorted
 * remove is never plan-cached, so there the property test sends `sort: {_id: 1}`, and every
 * printed op shows it. FerretDB keeps the unsorted shape.
 */
export const FIND_ONE_AND_DELETE_SORT = testbed.engine() === 'documentdb' ? { _id: 1 } : undefined
/** Options for a `findOneAndDelete` by a non-`_id` filter in any test (see above). */
export const FIND_ONE_AND_DELETE_OPTS = FIND_ONE_AND_DELETE_SORT ? { sort: FIND_ONE_AND_DELETE_SORT } : {}

export const POOL_SIZE = 4
const OID_HEX = ['6500000000000000000000a0', '6500000000000000000000a1', '6500000000000000000000a2', '6500000000000000000000a3']
const NUM_IDS = [1, 2, 3, 4.5] // int32 and double _ids
const STR_IDS = ['s0', 's1', 's2', 's3']

/** Field definitions shared by every model (fresh object per schema). */
export function opFields () {
  return { g: String, n: Number, tags: [String], lo: Number, hi: Number, old: String, renamed: String, born: String }
}

/**
 * The models the ops address, on one Mongoose instance: an ObjectId model with timestamps and
 * a discriminator, a numeric-_id model and a string-_id model.
 * @param {import('mongoose').Mongoose} m
 */
export function defineOpModels (m) {
  const { Schema } = m
  const Item = m.model('Item', new Schema(opFields(), { timestamps: true, discriminatorKey: 'kind' }), 'items')
  const Special = Item.discriminator('Special', new Schema({ level: Number }))
  const Num = m.model('Num', new Schema({ _id: Number, ...opFields() }), 'nums')
  const Str = m.model('Str', new Schema({ _id: String, ...opFields() }), 'strs')
  return { Item, Special, Num, Str }
}

export const OP_COLLECTIONS = ['items', 'nums', 'strs']

/**
 * Empties the op collections on both sides (uncaptured), once nothing is in flight.
 * @param {{flush(): Promise<void>, local: any, atlas: any}} env  from startSyncEnv
 */
export async function resetOpCollections (env) {
  await env.flush()
  for (const name of OP_COLLECTIONS) {
    await Promise.all([env.local, env.atlas].map((d) => d.collection(name).deleteMany({})))
  }
}

// ---- arbitraries ---------------------------------------------------------------------------

const MODELS = ['Item', 'Special', 'Num', 'Str']
const AUTO_ID_MODELS = new Set(['Item', 'Special']) // _id generated when absent
const slot = fc.nat({ max: POOL_SIZE - 1 }).map((i) => `#${i}`)
const group = fc.constantFrom('x', 'y')
const small = fc.integer({ min: -3, max: 9 })
const tag = fc.constantFrom('t1', 't2', 't3')

const fieldsArb = fc.record({
  g: group,
  n: fc.oneof(small, small.map((v) => v + 0.5)),
  tags: fc.array(tag, { maxLength: 3 }),
  old: fc.constantFrom('o1', 'o2')
}, { requiredKeys: ['g'] })

const filterArb = fc.oneof(
  { arbitrary: slot.map((id) => ({ _id: id })), weight: 3 },
  { arbitrary: group.map((g) => ({ g })), weight: 2 },
  { arbitrary: small.map((v) => ({ n: { $gte: v } })), weight: 1 }
)

const updateArb = fc.oneof(
  small.map((n) => ({ $set: { n } })),
  small.map((n) => ({ $inc: { n } })),
  tag.map((t) => ({ $push: { tags: t } })),
  tag.map((t) => ({ $pull: { tags: t } })),
  tag.map((t) => ({ $addToSet: { tags: t } })),
  fc.constantFrom('lo', 'old', 'tags').map((f) => ({ $unset: { [f]: 1 } })),
  fc.constant({ $rename: { old: 'renamed' } }),
  fc.tuple(small, fc.constantFrom('b1', 'b2')).map(([n, born]) => ({ $set: { n }, $setOnInsert: { born } })),
  small.map((v) => ({ $min: { lo: v } })),
  small.map((v) => ({ $max: { hi: v } })),
  group.map((g) => ({ $set: { g } })),
  fc.constantFrom('o1', 'o2').map((old) => ({ $set: { old } }))
)

// Upserts on the numeric/string models only by `_id`: anything else would make the server
// invent an ObjectId _id the schema cannot cast.
function saneUpsert (op) {
  return op.upsert && !AUTO_ID_MODELS.has(op.model) && op.filter && !('_id' in op.filter) ? { ...op, upsert: false } : op
}

const upsert = fc.boolean()
const returnDocument = fc.constantFrom('before', 'after')
const docArb = (model) => fc.record({ _id: AUTO_ID_MODELS.has(model) ? fc.option(slot, { nil: undefined }) : slot, fields: fieldsArb })
  .map(({ _id, fields }) => (_id === undefined ? { ...fields } : { _id, ...fields }))

function withModel (build) {
  return fc.constantFrom(...MODELS).chain((model) => build(model).map((rest) => saneUpsert({ model, ...rest })))
}

const subOpArb = (model) => fc.oneof(
  docArb(model).map((document) => ({ insertOne: { document } })),
  fc.record({ filter: filterArb, update: updateArb, upsert }).map((o) => ({ updateOne: saneUpsert({ model, ...o }) })),
  fc.record({ filter: filterArb, update: updateArb, upsert }).map((o) => ({ updateMany: saneUpsert({ model, ...o }) })),
  fc.record({ filter: filterArb, replacement: fieldsArb, upsert }).map((o) => ({ replaceOne: saneUpsert({ model, ...o }) })),
  filterArb.map((filter) => ({ deleteOne: { filter } })),
  filterArb.map((filter) => ({ deleteMany: { filter } }))
).map((sub) => {
  // saneUpsert needed the model; the bulkWrite statement itself does not carry it.
  const [k, v] = Object.entries(sub)[0]
  const { model: _ignored, ...rest } = v
  return { [k]: rest }
})

const PLAIN_OPS = {
  create: (model) => fc.record({ doc: docArb(model) }),
  save: (model) => fc.record({ id: slot, set: fieldsArb }),
  saveProjected: (model) => fc.record({ id: slot, n: small }),
  insertMany: (model) => fc.record({ docs: fc.array(docArb(model), { minLength: 1, maxLength: 3 }) }),
  updateOne: (model) => fc.record({ filter: filterArb, update: updateArb, upsert }),
  updateMany: (model) => fc.record({ filter: filterArb, update: updateArb, upsert }),
  replaceOne: (model) => fc.record({ filter: filterArb, replacement: fieldsArb, upsert }),
  findOneAndUpdate: (model) => fc.record({ filter: filterArb, update: updateArb, upsert, returnDocument }),
  findOneAndReplace: (model) => fc.record({ filter: filterArb, replacement: fieldsArb, upsert, returnDocument }),
  findOneAndDelete: (model) => fc.record({ filter: filterArb }),
  findByIdAndUpdate: (model) => fc.record({ id: slot, update: updateArb, upsert: upsert.map((u) => u && AUTO_ID_MODELS.has(model)) }),
  deleteOne: (model) => fc.record({ filter: filterArb }),
  deleteMany: (model) => fc.record({ filter: filterArb }),
  docDeleteOne: (model) => fc.record({ id: slot }),
  docUpdateOne: (model) => fc.record({ id: slot, update: updateArb }),
  bulkWrite: (model) => fc.record({ ops: fc.array(subOpArb(model), { minLength: 1, maxLength: 4 }), ordered: fc.boolean() })
}

/** Every op kind the property exercises (the test checks each one succeeded at least once). */
export const OP_KINDS = [...Object.keys(PLAIN_OPS), 'flush', 'parallel']

const plainOpArb = fc.oneof(...Object.entries(PLAIN_OPS).map(([kind, build]) => withModel((model) => build(model).map((o) => ({ kind, ...o })))))

/**
 * A random op: one write, a mid-sequence `flush`, or 2–3 writes run concurrently.
 * Each carries a fast-check toString that reads like the Mongoose call.
 */
export const opArb = fc.oneof(
  { arbitrary: plainOpArb, weight: 16 },
  { arbitrary: fc.constant({ kind: 'flush' }), weight: 1 },
  { arbitrary: fc.array(plainOpArb, { minLength: 2, maxLength: 3 }).map((ops) => ({ kind: 'parallel', ops })), weight: 2 }
).map(printable)

// ---- rendering -----------------------------------------------------------------------------

const j = (v) => JSON.stringify(v)

function render (op) {
  const M = op.model
  switch (op.kind) {
    case 'flush': return 'sync.flush()'
    case 'parallel': return `Promise.all([${op.ops.map(render).join(', ')}])`
    case 'create': return `${M}.create(${j(op.doc)})`
    case 'save': return `${M}.findById("${op.id}") → set ${j(op.set)} → save() (or new ${M} if absent)`
    case 'saveProjected': return `${M}.findById("${op.id}").select("n") → n=${op.n} → save()`
    case 'insertMany': return `${M}.insertMany(${j(op.docs)}, {ordered:false})`
    case 'updateOne':
    case 'updateMany': return `${M}.${op.kind}(${j(op.filter)}, ${j(op.update)}, {upsert:${op.upsert}})`
    case 'replaceOne': return `${M}.replaceOne(${j(op.filter)}, ${j(op.replacement)}, {upsert:${op.upsert}})`
    case 'findOneAndUpdate': return `${M}.findOneAndUpdate(${j(op.filter)}, ${j(op.update)}, {upsert:${op.upsert}, returnDocument:"${op.returnDocument}"})`
    case 'findOneAndReplace': return `${M}.findOneAndReplace(${j(op.filter)}, ${j(op.replacement)}, {upsert:${op.upsert}, returnDocument:"${op.returnDocument}"})`
    case 'findByIdAndUpdate': return `${M}.findByIdAndUpdate("${op.id}", ${j(op.update)}, {upsert:${op.upsert}})`
    case 'findOneAndDelete': return `${M}.findOneAndDelete(${j(op.filter)}${FIND_ONE_AND_DELETE_SORT ? `, {sort:${j(FIND_ONE_AND_DELETE_SORT)}}` : ''})`
    case 'deleteOne':
    case 'deleteMany': return `${M}.${op.kind}(${j(op.filter)})`
    case 'docDeleteOne': return `${M}.findById("${op.id}") → doc.deleteOne()`
    case 'docUpdateOne': return `${M}.findById("${op.id}") → doc.updateOne(${j(op.update)})`
    case 'bulkWrite': return `${M}.bulkWrite(${j(op.ops)}, {ordered:${op.ordered}})`
    default: return j(op)
  }
}

function printable (op) {
  const copy = { ...op } // fc.constant hands out one shared object
  Object.defineProperty(copy, fc.toStringMethod, { value: () => render(copy), enumerable: false })
  return copy
}

// ---- execution -----------------------------------------------------------------------------

/** Errors an app sees in normal operation with these ops: duplicate keys, lost save races. */
// A duplicate key is the app's own race. MongoDB answers 11000; the DocumentDB gateway answers a
// unique violation inside a transaction with code 112 and PostgreSQL's SQLSTATE 23505 as codeName.
const isDuplicateKey = (e) => e.code === 11000 || (e.code === 112 && e.codeName === 'SqlState(E23505)')

function expectedError (err) {
  if (!err) return false
  if (isDuplicateKey(err) || (Array.isArray(err.writeErrors) && err.writeErrors.every(isDuplicateKey))) return true
  return ['DocumentNotFoundError', 'VersionError'].includes(err.name)
}

/**
 * Runs ops against the models, one after another (a `parallel` op runs its writes concurrently).
 * @param {object} env  { models, lib, flush() }
 * @param {object[]} ops  descriptors from opArb
 * @param {{ok: Map<string, number>, expectedErrors: Map<string, number>}} stats  per-kind counts of
 *   writes that completed and of writes that failed the way apps see (duplicate key, save races)
 */
export async function runOps (env, ops, stats) {
  const { ObjectId } = env.lib.Types
  const idOf = (model, s) => {
    const i = Number(String(s).slice(1))
    if (AUTO_ID_MODELS.has(model)) return new ObjectId(OID_HEX[i])
    return model === 'Num' ? NUM_IDS[i] : STR_IDS[i]
  }
  const ids = (model, v) => {
    if (!v || typeof v !== 'object') return v
    return '_id' in v ? { ...v, _id: idOf(model, v._id) } : { ...v }
  }
  const bulk = (model, sub) => {
    const [k, v] = Object.entries(sub)[0]
    if (k === 'insertOne') return { insertOne: { document: ids(model, v.document) } }
    return { [k]: { ...v, filter: ids(model, v.filter) } }
  }

  async function one (op) {
    const M = env.models[op.model]
    switch (op.kind) {
      case 'flush': return env.flush()
      case 'parallel': return Promise.all(op.ops.map((o) => attempt(o)))
      case 'create': return M.create(ids(op.model, op.doc))
      case 'save': {
        const doc = (await M.findById(idOf(op.model, op.id))) || new M({ _id: idOf(op.model, op.id) })
        doc.set(op.set)
        return doc.save()
      }
      case 'saveProjected': {
        const doc = await M.findById(idOf(op.model, op.id)).select('n')
        if (!doc) return null
        doc.n = op.n
        return doc.save()
      }
      case 'insertMany': return M.insertMany(op.docs.map((d) => ids(op.model, d)), { ordered: false })
      case 'updateOne':
      case 'updateMany': return M[op.kind](ids(op.model, op.filter), op.update, { upsert: op.upsert })
      case 'replaceOne': return M.replaceOne(ids(op.model, op.filter), op.replacement, { upsert: op.upsert })
      case 'findOneAndUpdate': return M.findOneAndUpdate(ids(op.model, op.filter), op.update, { upsert: op.upsert, returnDocument: op.returnDocument })
      case 'findOneAndReplace': return M.findOneAndReplace(ids(op.model, op.filter), op.replacement, { upsert: op.upsert, returnDocument: op.returnDocument })
      case 'findByIdAndUpdate': return M.findByIdAndUpdate(idOf(op.model, op.id), op.update, { upsert: op.upsert })
      case 'findOneAndDelete': return M.findOneAndDelete(ids(op.model, op.filter), FIND_ONE_AND_DELETE_SORT ? { sort: FIND_ONE_AND_DELETE_SORT } : {})
      case 'deleteOne':
      case 'deleteMany': return M[op.kind](ids(op.model, op.filter))
      case 'docDeleteOne':
      case 'docUpdateOne': {
        const doc = await M.findById(idOf(op.model, op.id))
        if (!doc) return null
        return op.kind === 'docDeleteOne' ? doc.deleteOne() : doc.updateOne(op.update)
      }
      case 'bulkWrite': return M.bulkWrite(op.ops.map((s) => bulk(op.model, s)), { ordered: op.ordered })
      default: throw new Error(`unknown op kind ${op.kind}`)
    }
  }

  async function attempt (op) {
    try {
      // Mongoose mutates the filters and updates it is given (adds __v, timestamps): a copy keeps
      // the descriptor replayable while fast-check shrinks.
      await one(structuredClone(op))
      stats.ok.set(op.kind, (stats.ok.get(op.kind) || 0) + 1)
    } catch (err) {
      if (!expectedError(err)) {
        err.message = `${render(op)} threw: ${err.message}`
        throw err
      }
      stats.expectedErrors.set(op.kind, (stats.expectedErrors.get(op.kind) || 0) + 1)
    }
  }

  for (const op of ops) await attempt(op)
}
