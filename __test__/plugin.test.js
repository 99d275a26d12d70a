// The capture plugin against a real server (FerretDB via scripts/testbed.js), on Mongoose 9 and 8.
//
// Every write is observed the same way: snapshot the collection with the plain driver before
// and after, diff the documents, and check that
//   - every document that changed, appeared or disappeared was marked (pre ∪ post), and
//   - every pre-existing document that changed was marked BEFORE the write command left the
//     client (durable intent). "Before" is measured against the driver's commandStarted events
//     on the app's own connection, sequenced together with the sink's marks.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { FIND_ONE_AND_DELETE_OPTS } from './helpers/writeops.js'

const require = createRequire(import.meta.url)
const { MongoClient, BSON } = require('mongodb')
const { startServer } = require('../scripts/testbed.js')
const { createPlugin } = require('../lib/plugin.js')

const VERSIONS = [
  ['mongoose 9', require('mongoose')],
  ['mongoose 8', require('mongoose8')]
]
const DB_PREFIX = `dualsync_plugin_${process.pid}`
const CAP = 500
const EXCLUDED = 'excluded_things'
const WRITE_COMMANDS = new Set(['insert', 'update', 'delete', 'findAndModify'])

let server
let plain // the test's own driver client, for snapshots and seeding

beforeAll(async () => {
  server = await startServer({ name: 'plugin-local' })
  plain = new MongoClient(server.uri)
  await plain.connect()
}, 120_000)

afterAll(async () => {
  await plain?.close()
  await server?.destroy()
})

// ---- helpers ------------------------------------------------------------------------------

/** Type-aware key of an `_id` (ObjectId 'x' and string 'x' differ). */
function idKey (id) {
  if (id && id._bsontype === 'ObjectId') return `oid:${id.toHexString()}`
  if (id instanceof Date) return `date:${id.getTime()}`
  if (typeof id === 'string' || typeof id === 'number') return `${typeof id}:${id}`
  return `ejson:${BSON.EJSON.stringify(id, { relaxed: false })}`
}

/** Records marks, errors and the app connection's commands on one sequence. */
function makeRecorder ({ cap = CAP, excluded = [EXCLUDED], timeoutMs } = {}) {
  let seq = 0
  const rec = {
    events: [],
    errors: [],
    sink: {
      mark (ops) {
        for (const op of ops) rec.events.push({ kind: 'mark', seq: ++seq, op })
      },
      isExcluded: (name) => excluded.includes(name),
      onError (err, context) {
        rec.errors.push({ err, context })
      },
      queryMarkCap: cap,
      queryMarkTimeoutMs: timeoutMs
    },
    onCommand (ev) {
      const lsid = ev.command.lsid ? ev.command.lsid.id.toString('hex') : null
      if (WRITE_COMMANDS.has(ev.commandName)) rec.events.push({ kind: 'write', seq: ++seq, name: ev.commandName, lsid })
      else if (ev.commandName === 'find') {
        rec.events.push({ kind: 'find', seq: ++seq, coll: ev.command.find, collation: ev.command.collation, maxTimeMS: ev.command.maxTimeMS, lsid })
      }
    },
    onCommandDone (ev) {
      if (WRITE_COMMANDS.has(ev.commandName)) rec.events.push({ kind: 'writeDone', seq: ++seq, name: ev.commandName })
    },
    reset () {
      rec.events.length = 0
      rec.errors.length = 0
    }
  }
  return rec
}

async function snapshot (db, coll) {
  const docs = await plain.db(db).collection(coll).find({}).toArray()
  return new Map(docs.map((d) => [idKey(d._id), BSON.EJSON.stringify(d, { relaxed: false })]))
}

/**
 * Runs `fn` (one write, or several) and reports what it changed in `coll` and what was marked.
 */
async function observe (env, coll, fn) {
  const before = await snapshot(env.db, coll)
  env.rec.reset()
  const result = await fn()
  const after = await snapshot(env.db, coll)
  const events = env.rec.events.slice()
  const firstWrite = events.find((e) => e.kind === 'write')
  const lastDone = events.filter((e) => e.kind === 'writeDone').pop()
  const marks = events.filter((e) => e.kind === 'mark')
  const here = marks.filter((e) => e.op.collection === coll)
  const isPre = (e) => firstWrite !== undefined && e.seq < firstWrite.seq
  const isPost = (e) => lastDone !== undefined && e.seq > lastDone.seq
  const idsOf = (list) => new Set(list.filter((e) => e.op.id !== undefined).map((e) => idKey(e.op.id)))
  const modified = [...before.keys()].filter((k) => after.has(k) && after.get(k) !== before.get(k))
  const disappeared = [...before.keys()].filter((k) => !after.has(k))
  const appeared = [...after.keys()].filter((k) => !before.has(k))
  return {
    result,
    modified,
    disappeared,
    appeared,
    changed: [...modified, ...disappeared, ...appeared],
    marks,
    otherMarks: marks.filter((e) => e.op.collection !== coll),
    preIds: idsOf(here.filter(isPre)),
    allIds: idsOf(here),
    postIds: idsOf(here.filter(isPost)),
    preCollection: here.some((e) => isPre(e) && e.op.kind === 'collection'),
    postCollection: here.some((e) => isPost(e) && e.op.kind === 'collection'),
    collectionMarks: here.filter((e) => e.op.kind === 'collection').length,
    writes: events.filter((e) => e.kind === 'write').length,
    finds: events.filter((e) => e.kind === 'find').length,
    commands: events.filter((e) => e.kind === 'find' || e.kind === 'write'),
    errors: env.rec.errors.slice()
  }
}

/**
 * The core property: changed ⊆ pre ∪ post, pre-existing changed ⊆ pre (and, where the `_id`
 * is known in advance, appeared ⊆ pre too), and changed ⊆ marks made after the last write
 * command completed (the re-read trigger), unless `post: false` (concurrent writes interleave).
 */
function expectCovered (env, o, { insertsInPre = false, allowCollection = false, post = true } = {}) {
  expect(o.errors.map((e) => e.err.message)).toEqual([])
  expect(o.writes).toBeGreaterThan(0)
  expect(o.changed.length).toBeGreaterThan(0)
  for (const e of o.marks) expect(e.op.db).toBe(env.db)
  expect(o.otherMarks.map((e) => e.op)).toEqual([])
  if (!allowCollection) expect(o.collectionMarks).toBe(0)
  expect(o.changed.filter((k) => !o.allIds.has(k))).toEqual([])
  expect([...o.modified, ...o.disappeared].filter((k) => !o.preIds.has(k))).toEqual([])
  if (insertsInPre) expect(o.appeared.filter((k) => !o.preIds.has(k))).toEqual([])
  if (post && !o.postCollection) expect(o.changed.filter((k) => !o.postIds.has(k))).toEqual([])
}

function defineModels (m) {
  const { Schema } = m
  const Line = new Schema({ sku: String, qty: Number })
  const Ship = new Schema({ city: String })
  const models = {
    Item: m.model(
      'Item',
      new Schema(
        { name: String, group: String, n: Number, tags: [String], lo: Number, hi: Number, old: String, renamed: String, born: String },
        { timestamps: true }
      )
    ),
    Order: m.model('Order', new Schema({ ref: String, lines: [Line], ship: Ship }, { timestamps: true })),
    Event: m.model('Event', new Schema({ name: String, n: Number }, { discriminatorKey: 'kind', collection: 'events' })),
    Many: m.model('Many', new Schema({ group: String, n: Number }), 'many'),
    Heavy: m.model('Heavy', new Schema({ group: String, a: [Number] }), 'heavy'),
    Skipped: m.model('Skipped', new Schema({ name: String, n: Number }), EXCLUDED),
    StrId: m.model('StrId', new Schema({ _id: String, n: Number, g: String }), 'str_ids'),
    NumId: m.model('NumId', new Schema({ _id: Number, n: Number, g: String }), 'num_ids'),
    Uniq: m.model('Uniq', new Schema({ code: { type: String, unique: true }, n: Number, g: String }), 'uniqs')
  }
  models.Click = models.Event.discriminator('Click', new Schema({ x: Number }))
  return models
}

/** A Mongoose instance of `lib` with the plugin applied globally and commands recorded. */
async function makeEnv (lib, dbName, recOpts) {
  const m = new lib.Mongoose()
  const rec = makeRecorder(recOpts)
  const plugin = createPlugin(rec.sink)
  m.plugin(plugin)
  const models = defineModels(m)
  await m.connect(server.uri, { dbName, monitorCommands: true })
  m.connection.getClient().on('commandStarted', (ev) => rec.onCommand(ev))
  m.connection.getClient().on('commandSucceeded', (ev) => rec.onCommandDone(ev))
  m.connection.getClient().on('commandFailed', (ev) => rec.onCommandDone(ev))
  return { m, rec, plugin, models, db: dbName }
}

// ---- the write paths, on each Mongoose version ------------------------------------------------

describe.each(VERSIONS)('%s', (label, lib) => {
  const env = {}
  const tag = label.replace(/\W/g, '')

  beforeAll(async () => {
    // Dropped before Mongoose connects: its automatic index builds (the unique one) come after.
    await plain.db(`${DB_PREFIX}_${tag}`).dropDatabase()
    Object.assign(env, await makeEnv(lib, `${DB_PREFIX}_${tag}`))
    await env.models.Uniq.init()
  }, 60_000)

  afterAll(async () => {
    await env.m?.connection.db.dropDatabase()
    await env.m?.disconnect()
  })

  it('is a named function taking (schema, options)', () => {
    expect(typeof env.plugin).toBe('function')
    expect(env.plugin.name).toBe('dualsyncPlugin')
  })

  it('create / save / insertOne (timestamps on) mark the document before and after', async () => {
    const { Item } = env.models
    let doc
    let o = await observe(env, 'items', async () => {
      doc = await Item.create({ name: 'c1', n: 1 })
    })
    expectCovered(env, o, { insertsInPre: true })
    expect(o.allIds).toEqual(new Set([idKey(doc._id)]))

    doc.n = 2
    o = await observe(env, 'items', () => doc.save())
    expectCovered(env, o)

    o = await observe(env, 'items', () => new Item({ name: 'c2' }).save())
    expectCovered(env, o, { insertsInPre: true })

    if (typeof Item.insertOne === 'function') {
      o = await observe(env, 'items', () => Item.insertOne({ name: 'c3' }))
      expectCovered(env, o, { insertsInPre: true })
    }
  })

  it('update operators: $inc $push $pull $addToSet $unset $rename $setOnInsert $min $max', async () => {
    const { Item } = env.models
    const [a] = await Item.insertMany([
      { name: 'op-a', group: 'ops', n: 1, tags: ['x'], lo: 5, hi: 5, old: 'o' },
      { name: 'op-b', group: 'ops', n: 1, tags: ['y'], lo: 5, hi: 5, old: 'o' }
    ])
    const cases = [
      ['$inc by name', () => Item.updateOne({ name: 'op-a' }, { $inc: { n: 2 } })],
      ['$inc by _id', () => Item.updateOne({ _id: a._id }, { $inc: { n: 1 } })],
      ['$push', () => Item.updateOne({ name: 'op-b' }, { $push: { tags: 'z' } })],
      ['$pull', () => Item.updateMany({ group: 'ops' }, { $pull: { tags: 'x' } })],
      ['$addToSet', () => Item.updateMany({ group: 'ops' }, { $addToSet: { tags: 'w' } })],
      ['$unset', () => Item.updateOne({ name: 'op-b' }, { $unset: { old: 1 } })],
      ['$rename', () => Item.updateOne({ name: 'op-a' }, { $rename: { old: 'renamed' } })],
      ['$min', () => Item.updateMany({ group: 'ops' }, { $min: { lo: 1 } })],
      ['$max', () => Item.updateMany({ group: 'ops' }, { $max: { hi: 9 } })],
      ['$setOnInsert (matching: no insert)', () => Item.updateOne({ name: 'op-a' }, { $set: { n: 7 }, $setOnInsert: { born: 'now' } }, { upsert: true })],
      ['$setOnInsert (upsert)', () => Item.updateOne({ name: 'op-new' }, { $set: { n: 1 }, $setOnInsert: { born: 'now' } }, { upsert: true })]
    ]
    for (const [name, write] of cases) {
      const o = await observe(env, 'items', write)
      try {
        expectCovered(env, o)
      } catch (err) {
        err.message = `${name}: ${err.message}`
        throw err
      }
    }
  })

  it('updateMany over many documents marks each one, with a single _id-only find', async () => {
    const { Many } = env.models
    const docs = Array.from({ length: 400 }, (_, i) => ({ group: 'under', n: i }))
    await plain.db(env.db).collection('many').insertMany(docs)
    const o = await observe(env, 'many', () => Many.updateMany({ group: 'under' }, { $inc: { n: 1 } }))
    expectCovered(env, o)
    expect(o.modified).toHaveLength(400)
    expect(o.preIds.size).toBe(400)
    expect(o.finds).toBe(1)
  })

  it('above queryMarkCap matched _ids, marks the collection (before and after) instead', async () => {
    const { Many } = env.models
    await plain.db(env.db).collection('many').insertMany(Array.from({ length: CAP + 1 }, (_, i) => ({ group: 'over', n: i })))
    const o = await observe(env, 'many', () => Many.updateMany({ group: 'over' }, { $set: { n: -1 } }))
    expect(o.modified).toHaveLength(CAP + 1)
    expect(o.preCollection).toBe(true)
    expect(o.collectionMarks).toBe(2)
    expect(o.allIds.size).toBe(0)
    expect(o.errors).toEqual([])
  })

  it('upserts: updateOne, findOneAndUpdate (after / before), replaceOne, bulkWrite', async () => {
    const { Item } = env.models
    const upserts = [
      ['updateOne', () => Item.updateOne({ name: 'up-1' }, { $set: { n: 1 } }, { upsert: true })],
      ['findOneAndUpdate after', () => Item.findOneAndUpdate({ name: 'up-2' }, { $set: { n: 1 } }, { upsert: true, returnDocument: 'after' })],
      ['findOneAndUpdate before', () => Item.findOneAndUpdate({ name: 'up-3' }, { $set: { n: 1 } }, { upsert: true, returnDocument: 'before' })],
      ['findOneAndUpdate before, lean', () => Item.findOneAndUpdate({ name: 'up-4' }, { $set: { n: 1 } }, { upsert: true, returnDocument: 'before', lean: true })],
      ['replaceOne', () => Item.replaceOne({ name: 'up-5' }, { name: 'up-5', n: 1 }, { upsert: true })],
      ['findOneAndReplace before', () => Item.findOneAndReplace({ name: 'up-6' }, { name: 'up-6', n: 1 }, { upsert: true, returnDocument: 'before' })],
      ['bulkWrite', () => Item.bulkWrite([
        { updateOne: { filter: { name: 'up-7' }, update: { $set: { n: 1 } }, upsert: true } },
        { replaceOne: { filter: { name: 'up-8' }, replacement: { name: 'up-8' }, upsert: true } }
      ])],
      ['updateOne by _id', () => Item.updateOne({ _id: new env.m.Types.ObjectId() }, { $set: { n: 1 } }, { upsert: true })],
      ['findOneAndUpdate before, includeResultMetadata', () =>
        Item.findOneAndUpdate({ name: 'up-10' }, { $set: { n: 1 } }, { upsert: true, returnDocument: 'before', includeResultMetadata: true })]
    ]
    for (const [name, write] of upserts) {
      const o = await observe(env, 'items', write)
      try {
        expect(o.appeared.length).toBeGreaterThan(0)
        // An upsert that returns the old (null) document cannot name what it
        // inserted (a concurrent insert may match the filter instead): the
        // collection is reconciled as well.
        const unnamed = / before(, lean)?$/.test(name)
        expectCovered(env, o, { allowCollection: unnamed })
        if (unnamed) expect(o.collectionMarks, name).toBe(1)
        if (name === 'updateOne by _id') expectCovered(env, o, { insertsInPre: true })
        if (name.endsWith('includeResultMetadata')) expect(o.finds).toBe(1) // the pre find only: the result names the upsert
      } catch (err) {
        err.message = `${name}: ${err.message}`
        throw err
      }
    }
    // The upserted document of a findOneAndUpdate that returns the old one (null) can't be named
    // when the filter no longer matches it: then the collection is marked.
    const o = await observe(env, 'items', () =>
      Item.findOneAndUpdate({ name: 'up-9' }, { $set: { name: 'up-9-renamed' } }, { upsert: true, returnDocument: 'before' })
    )
    expect(o.appeared).toHaveLength(1)
    expect(o.collectionMarks).toBe(1)
    expect(o.preCollection).toBe(false)
  })

  it('deletes: deleteOne, deleteMany, findOneAndDelete, doc.deleteOne()', async () => {
    const { Item } = env.models
    const docs = await Item.insertMany(Array.from({ length: 6 }, (_, i) => ({ name: `del-${i}`, group: 'del' })))
    for (const [name, write] of [
      ['deleteOne', () => Item.deleteOne({ name: 'del-0' })],
      ['findOneAndDelete', () => Item.findOneAndDelete({ name: 'del-1' }, FIND_ONE_AND_DELETE_OPTS)],
      ['doc.deleteOne', () => docs[2].deleteOne()],
      ['findByIdAndDelete', () => Item.findByIdAndDelete(docs[3]._id)],
      ['deleteMany', () => Item.deleteMany({ group: 'del' })]
    ]) {
      const o = await observe(env, 'items', write)
      try {
        expect(o.disappeared.length).toBeGreaterThan(0)
        expectCovered(env, o)
      } catch (err) {
        err.message = `${name}: ${err.message}`
        throw err
      }
    }
  })

  it('replaceOne, findOneAndReplace and doc.updateOne()', async () => {
    const { Item } = env.models
    const doc = await Item.create({ name: 'rep', n: 1, tags: ['a'] })
    let o = await observe(env, 'items', () => Item.replaceOne({ name: 'rep' }, { name: 'rep', n: 2 }))
    expectCovered(env, o)
    o = await observe(env, 'items', () => Item.findOneAndReplace({ name: 'rep' }, { name: 'rep', n: 3 }))
    expectCovered(env, o)
    o = await observe(env, 'items', () => doc.updateOne({ $inc: { n: 1 } }))
    expectCovered(env, o)
    expect(o.finds).toBe(0) // filtered by _id: no extra query
  })

  it('insertMany with and without _id: ids assigned before the insert, so pre marks name them', async () => {
    const { Item } = env.models
    const given = new env.m.Types.ObjectId()
    const input = [{ name: 'im-1' }, { _id: given, name: 'im-2' }, { _id: String(new env.m.Types.ObjectId()), name: 'im-3' }]
    const o = await observe(env, 'items', () => Item.insertMany(input))
    expectCovered(env, o, { insertsInPre: true })
    expect(o.appeared).toHaveLength(3)
    expect(input[0]._id).toBeDefined() // assigned by the pre hook
    expect(o.allIds.has(idKey(given))).toBe(true)

    const single = await observe(env, 'items', () => Item.insertMany({ name: 'im-4' }))
    expectCovered(env, single, { insertsInPre: true })

    const lean = await observe(env, 'items', () => Item.insertMany([{ name: 'im-5' }, { name: 'im-6' }], { lean: true }))
    expectCovered(env, lean, { insertsInPre: true })

    const raw = await observe(env, 'items', () => Item.insertMany([{ name: 'im-7' }], { rawResult: true }))
    expectCovered(env, raw, { insertsInPre: true })
    expect(raw.allIds.size).toBe(1)
  })

  it('insertMany ordered:false with a duplicate key: the inserted documents are marked', async () => {
    const { Uniq } = env.models
    await Uniq.create({ code: 'dup' })
    const o = await observe(env, 'uniqs', () =>
      Uniq.insertMany([{ code: 'u1' }, { code: 'dup' }, { code: 'u2' }], { ordered: false }).then(
        () => 'resolved',
        (err) => err
      )
    )
    expect(o.result).toBeInstanceOf(Error)
    expect(o.appeared).toHaveLength(2)
    expectCovered(env, o, { insertsInPre: true })
  })

  it('writes that fail part-way are marked again after the failure', async () => {
    const { Uniq } = env.models
    const settle = (p) => p.then(() => 'resolved', (err) => err)
    await Uniq.insertMany([{ code: 'pw-1', g: 'pw' }, { code: 'pw-2', g: 'pw' }])
    // The second document's update hits the unique index. MongoDB and FerretDB keep the first
    // one's update; DocumentDB runs the command as one PostgreSQL statement and keeps neither.
    // Whatever the server kept must be marked.
    const o = await observe(env, 'uniqs', () => settle(Uniq.updateMany({ g: 'pw' }, { $set: { code: 'pw-same' } })))
    expect(o.result).toBeInstanceOf(Error)
    expect(o.modified.length).toBeLessThanOrEqual(1)
    if (o.modified.length === 1) expectCovered(env, o)
    else expect(o.changed).toEqual([]) // nothing kept: nothing to mark

    // An ordered bulkWrite stops at a duplicate: what ran before it is marked after it.
    const b = await observe(env, 'uniqs', () =>
      settle(Uniq.bulkWrite([
        { insertOne: { document: { code: 'bk-1' } } },
        { updateOne: { filter: { code: 'pw-2' }, update: { $inc: { n: 1 } } } },
        { insertOne: { document: { code: 'pw-2' } } }, // taken whatever the updateMany kept
        { insertOne: { document: { code: 'bk-2' } } }
      ]))
    )
    expect(b.result).toBeInstanceOf(Error)
    expect(b.appeared).toHaveLength(1)
    expect(b.modified).toHaveLength(1)
    expectCovered(env, b, { insertsInPre: true })

    // A save the server rejects: the error reaches the app (Mongoose 8 goes on after an error
    // hook only once its promise settles: one returning nothing would hold the save forever),
    // and the document is marked before the write and again after it failed.
    const dup = new Uniq({ code: 'bk-1' })
    const s = await observe(env, 'uniqs', () => settle(dup.save()))
    expect(s.result).toBeInstanceOf(Error)
    expect(s.changed).toEqual([])
    expect(s.preIds.has(idKey(dup._id))).toBe(true)
    expect(s.postIds.has(idKey(dup._id))).toBe(true)
    expect(s.errors).toEqual([])

    // An upsert the server rejected inserted nothing: no collection mark for it.
    const u = await observe(env, 'uniqs', () =>
      settle(Uniq.updateOne({ code: 'absent' }, { $set: { code: 'pw-2' } }, { upsert: true }))
    )
    expect(u.result).toBeInstanceOf(Error)
    expect(u.changed).toEqual([])
    expect(u.collectionMarks).toBe(0)
    expect(u.errors).toEqual([])
  })

  it('bulkWrite: insertOne, updateOne, updateMany, replaceOne, deleteOne, deleteMany', async () => {
    const { Item } = env.models
    const seeded = await Item.insertMany(Array.from({ length: 8 }, (_, i) => ({ name: `bw-${i}`, group: i < 4 ? 'bw-lo' : 'bw-hi', n: i })))
    const o = await observe(env, 'items', () =>
      Item.bulkWrite([
        { insertOne: { document: { name: 'bw-new', n: 0 } } },
        { updateOne: { filter: { name: 'bw-0' }, update: { $inc: { n: 10 } } } },
        { updateOne: { filter: { _id: String(seeded[1]._id) }, update: { $push: { tags: 't' } } } },
        { updateMany: { filter: { group: 'bw-lo' }, update: { $set: { old: 'x' } } } }, // overlaps the two above
        { replaceOne: { filter: { name: 'bw-4' }, replacement: { name: 'bw-4', n: 44 } } },
        { deleteOne: { filter: { name: 'bw-5' } } },
        { deleteMany: { filter: { group: 'bw-hi', n: { $gte: 6 } } } }
      ])
    )
    expectCovered(env, o, { insertsInPre: true })
    expect(o.appeared).toHaveLength(1)
    expect(o.disappeared).toHaveLength(3)
    // One find per filtered op, the `_id`-naming one included (the bulk mixes both kinds), so
    // the count check bounds each op by its own matches; then the after-write check of the
    // single-document ops by non-`_id` filters (bulkcheck.js): one `_id` lookup of what the
    // deletes found, one re-find per updateOne/replaceOne (bw-0, bw-4).
    expect(o.finds).toBe(6 + 1 + 2)
  })

  it('bulkSave marks new and changed documents', async () => {
    const { Item } = env.models
    const existing = await Item.create({ name: 'bs-1', n: 1 })
    existing.n = 2
    const o = await observe(env, 'items', () => Item.bulkSave([existing, new Item({ name: 'bs-2' })]))
    expectCovered(env, o, { insertsInPre: true })
  })

  it('discriminators are marked with the base collection', async () => {
    const { Click, Event } = env.models
    let o = await observe(env, 'events', () => Click.create({ name: 'click-1', x: 1 }))
    expectCovered(env, o, { insertsInPre: true })
    await Event.create({ name: 'plain-1', n: 0 })
    o = await observe(env, 'events', () => Click.updateMany({}, { $inc: { x: 1 } }))
    expectCovered(env, o)
    expect(o.preIds.size).toBe(1) // the discriminator's own documents only
    o = await observe(env, 'events', () => Event.insertMany([{ kind: 'Click', name: 'click-2', x: 3 }, { name: 'plain-2' }]))
    expectCovered(env, o, { insertsInPre: true })
  })

  it('subdocuments are never marked', async () => {
    const { Order } = env.models
    const order = new Order({ ref: 'o1', lines: [{ sku: 'a', qty: 1 }, { sku: 'b', qty: 2 }], ship: { city: 'Oslo' } })
    let o = await observe(env, 'orders', () => order.save())
    expectCovered(env, o, { insertsInPre: true })
    expect(o.allIds).toEqual(new Set([idKey(order._id)]))
    order.lines[0].qty = 5
    order.ship.city = 'Bergen'
    o = await observe(env, 'orders', () => order.save())
    expectCovered(env, o)
    expect(o.allIds).toEqual(new Set([idKey(order._id)]))
    o = await observe(env, 'orders', () => order.deleteOne())
    expectCovered(env, o)
    expect(o.allIds).toEqual(new Set([idKey(order._id)]))
  })

  it('{sync: false} opts out on every path (and the write still happens)', async () => {
    const { Item } = env.models
    const doc = await Item.create({ name: 'opt', n: 0, group: 'opt' })
    const paths = [
      ['save', () => { doc.n += 1; return doc.save({ sync: false }) }],
      ['create-like save', () => new Item({ name: 'opt-new' }).save({ sync: false })],
      ['updateOne', () => Item.updateOne({ name: 'opt' }, { $inc: { n: 1 } }, { sync: false })],
      ['setOptions', () => Item.updateMany({ group: 'opt' }, { $inc: { n: 1 } }).setOptions({ sync: false })],
      ['findOneAndUpdate', () => Item.findOneAndUpdate({ name: 'opt' }, { $inc: { n: 1 } }, { sync: false })],
      ['replaceOne', () => Item.replaceOne({ name: 'opt-new' }, { name: 'opt-new', n: 9 }, { sync: false })],
      ['doc.updateOne', () => doc.updateOne({ $inc: { n: 1 } }, { sync: false })],
      ['insertMany', () => Item.insertMany([{ name: 'opt-im', group: 'opt' }], { sync: false })],
      ['bulkWrite', () => Item.bulkWrite([{ updateOne: { filter: { name: 'opt' }, update: { $inc: { n: 1 } } } }, { insertOne: { document: { name: 'opt-bw', group: 'opt' } } }], { sync: false })],
      ['findOneAndDelete', () => Item.findOneAndDelete({ name: 'opt-bw' }, { ...FIND_ONE_AND_DELETE_OPTS, sync: false })],
      ['doc.deleteOne', () => doc.deleteOne({ sync: false })],
      ['deleteMany', () => Item.deleteMany({ group: 'opt' }, { sync: false })]
    ]
    for (const [name, write] of paths) {
      const o = await observe(env, 'items', write)
      expect(o.changed.length, name).toBeGreaterThan(0)
      expect(o.marks.map((e) => e.op), name).toEqual([])
      expect(o.finds, name).toBe(0)
    }
  })

  it('{middleware: false} does not turn capture off', async () => {
    const { Item } = env.models
    await Item.create({ name: 'mw', n: 0 })
    let o = await observe(env, 'items', () => Item.updateOne({ name: 'mw' }, { $inc: { n: 1 } }, { middleware: false }))
    expectCovered(env, o)
    o = await observe(env, 'items', () => Item.insertMany([{ name: 'mw-2' }], { middleware: false }))
    expectCovered(env, o, { insertsInPre: true })
    o = await observe(env, 'items', () => Item.bulkWrite([{ updateOne: { filter: { name: 'mw' }, update: { $inc: { n: 1 } } } }], { middleware: false }))
    expectCovered(env, o)
  })

  it('excluded collections are never marked and cost no query', async () => {
    const { Skipped } = env.models
    const doc = await Skipped.create({ name: 's', n: 0 })
    for (const write of [
      () => Skipped.updateMany({ name: 's' }, { $inc: { n: 1 } }),
      () => Skipped.insertMany([{ name: 's2' }]),
      () => Skipped.bulkWrite([{ updateOne: { filter: { name: 's2' }, update: { $set: { n: 3 } } } }]),
      () => Skipped.findOneAndUpdate({ name: 's' }, { $set: { n: 5 } }, { upsert: true }),
      () => doc.deleteOne()
    ]) {
      const o = await observe(env, EXCLUDED, write)
      expect(o.changed.length).toBeGreaterThan(0)
      expect(o.marks).toEqual([])
      expect(o.finds).toBe(0)
    }
  })

  it('_id types ObjectId, string and number: kept as is, no query when the filter names them', async () => {
    const { StrId, NumId, Item } = env.models
    for (const [Model, coll, ids] of [
      [StrId, 'str_ids', ['s-1', 's-2', 's-3']],
      [NumId, 'num_ids', [1, 2, 3]]
    ]) {
      let o = await observe(env, coll, () => Model.create({ _id: ids[0], n: 0, g: 'g' }))
      expectCovered(env, o, { insertsInPre: true })
      o = await observe(env, coll, () => Model.insertMany([{ _id: ids[1], g: 'g' }, { _id: ids[2], g: 'g' }]))
      expectCovered(env, o, { insertsInPre: true })
      o = await observe(env, coll, () => Model.updateOne({ _id: ids[0] }, { $inc: { n: 1 } }))
      expectCovered(env, o)
      expect(o.finds).toBe(0)
      o = await observe(env, coll, () => Model.updateMany({ _id: { $in: ids } }, { $inc: { n: 1 } }))
      expectCovered(env, o)
      expect(o.finds).toBe(0)
      expect([...o.preIds].sort()).toEqual(ids.map(idKey).sort())
      o = await observe(env, coll, () => Model.updateMany({ g: 'g' }, { $inc: { n: 1 } }))
      expectCovered(env, o)
      o = await observe(env, coll, () => Model.deleteOne({ _id: { $eq: ids[1] } }))
      expectCovered(env, o)
      expect(o.finds).toBe(0)
    }
    const item = await Item.create({ name: 'oid' })
    const o = await observe(env, 'items', () => Item.updateOne({ _id: String(item._id) }, { $set: { n: 1 } }))
    expectCovered(env, o)
    expect(o.finds).toBe(0)
    expect(o.marks.every((e) => e.op.id._bsontype === 'ObjectId')).toBe(true) // cast from the string
    // ObjectIds are kept as they are (no cast), and a mix with a hex string is cast as a whole
    const other = await Item.create({ name: 'oid 2' })
    const mixed = await observe(env, 'items', () => Item.updateMany({ _id: { $in: [item._id, String(other._id)] } }, { $set: { n: 2 } }))
    expectCovered(env, mixed)
    expect(mixed.finds).toBe(0)
    expect(mixed.marks.every((e) => e.op.id._bsontype === 'ObjectId')).toBe(true)
    expect(new Set(mixed.marks.map((e) => e.op.id.toHexString()))).toEqual(new Set([item._id.toHexString(), other._id.toHexString()]))
  })

  it('a filter that does not cast: the app write fails as usual, nothing is marked or reported', async () => {
    const { Item } = env.models
    env.rec.reset()
    await expect(Item.updateOne({ _id: 'not-an-object-id' }, { $set: { n: 1 } })).rejects.toThrow(/Cast to ObjectId failed/)
    expect(env.rec.events.filter((e) => e.kind !== 'find')).toEqual([])
    expect(env.rec.errors).toEqual([])
  })

  it('a failing pre-find is reported to onError, the collection is marked, the write succeeds', async () => {
    const { Many } = env.models
    await plain.db(env.db).collection('many').insertMany([{ group: 'fault', n: 0 }, { group: 'fault', n: 0 }])
    const driverColl = Many.collection.collection
    const realFind = driverColl.find
    const failNextFind = () => {
      driverColl.find = function failingFind () {
        driverColl.find = realFind // fail once
        throw new Error('injected find failure')
      }
    }
    try {
      for (const [hook, write] of [
        ['pre:updateMany', () => Many.updateMany({ group: 'fault' }, { $inc: { n: 1 } })],
        ['pre:bulkWrite', () => Many.bulkWrite([{ updateMany: { filter: { group: 'fault' }, update: { $inc: { n: 1 } } } }])]
      ]) {
        failNextFind()
        const o = await observe(env, 'many', write)
        expect(o.modified).toHaveLength(2)
        expect(o.errors.map((e) => [e.err.message, e.context])).toEqual([
          // The collection and database name where the capture failed, so it can be reconciled.
          ['injected find failure', { hook, model: 'Many', collection: 'many', db: env.db }]
        ])
        expect(o.preCollection).toBe(true)
      }
    } finally {
      driverColl.find = realFind
    }
  })

  it('findByIdAndUpdate upsert (new: false) marks its _id, not the whole collection', async () => {
    const { Item, StrId } = env.models
    const id = new env.m.Types.ObjectId()
    const o = await observe(env, 'items', () => Item.findByIdAndUpdate(id, { $set: { n: 1 } }, { upsert: true }))
    expect(o.appeared).toEqual([idKey(id)])
    expect(o.collectionMarks).toBe(0)
    expectCovered(env, o, { insertsInPre: true })
    const s = await observe(env, 'str_ids', () => StrId.findOneAndUpdate({ _id: { $eq: 'fbu-1' } }, { $set: { n: 2 } }, { upsert: true }))
    expect(s.appeared).toEqual([idKey('fbu-1')])
    expect(s.collectionMarks).toBe(0)
    expectCovered(env, s, { insertsInPre: true })
    // An $in names no single _id for the insert: still reconciled.
    const many = await observe(env, 'str_ids', () => StrId.findOneAndUpdate({ _id: { $in: ['fbu-2', 'fbu-3'] }, g: 'x' }, { $set: { n: 3 } }, { upsert: true }))
    expect(many.collectionMarks).toBe(1)
  })

  it('the _id-only find carries maxTimeMS; past it the collection is marked, never an app error', async () => {
    const { Many } = env.models
    let o = await observe(env, 'many', () => Many.updateMany({ group: 'bounded' }, { $inc: { n: 1 } }))
    const finds = o.commands.filter((c) => c.kind === 'find' && c.coll === 'many')
    expect(finds).toHaveLength(1)
    expect(finds[0].maxTimeMS).toBe(5000) // the default bound
    // A lookup that cannot finish inside its bound. The bound is 50 ms, not 1: DocumentDB's
    // gateway applies maxTimeMS as the pooled postgres connection's statement_timeout and resets
    // it with a statement that runs under that same bound, so under load a 1 ms bound can cancel
    // the reset and leave 1 ms on the connection for the commands of every later test. The
    // lookup is made slow instead: ten unindexed $elemMatch clauses (an $or, so none cuts the
    // others short) over array documents, seeded (doubling) until one unbounded lookup takes ten
    // bounds on this machine, now.
    const BOUND_MS = 50
    const slow = await makeEnv(lib, `${DB_PREFIX}_${tag}_slow`, { timeoutMs: BOUND_MS })
    try {
      const coll = plain.db(slow.db).collection('heavy')
      const filter = { $or: Array.from({ length: 10 }, (_, i) => ({ a: { $elemMatch: { $gt: 1000 + i, $lt: 2000 } } })) }
      await coll.deleteMany({})
      await coll.insertOne({ group: 'target', a: [1500] })
      const filler = Array.from({ length: 50 }, (_, j) => j)
      let seeded = 0
      let lookupMs = 0
      while (lookupMs < 10 * BOUND_MS && seeded < 1_000_000) {
        for (let left = Math.max(1000, seeded); left > 0; left -= 5000) {
          await coll.insertMany(Array.from({ length: Math.min(5000, left) }, () => ({ group: 'filler', a: filler })))
        }
        seeded = await coll.countDocuments({ group: 'filler' })
        const t0 = process.hrtime.bigint()
        await coll.find(filter, { projection: { _id: 1 } }).toArray()
        lookupMs = Number(process.hrtime.bigint() - t0) / 1e6
      }
      o = await observe(slow, 'heavy', () => slow.models.Heavy.updateMany(filter, { $set: { group: 'hit' } }))
      expect(o.commands.find((c) => c.kind === 'find').maxTimeMS).toBe(BOUND_MS)
      expect(o.errors.map((e) => e.err.message)).toEqual([]) // a timeout is not a capture failure
      expect(o.result.modifiedCount).toBe(1) // the app's write went through
      expect(o.preCollection).toBe(true)
    } finally {
      await slow.m.connection.db.dropDatabase()
      await slow.m.disconnect()
    }
  })

  it("the _id find runs in the write's session and with its collation", async () => {
    const { Item } = env.models
    await Item.insertMany([{ name: 'sess-1', group: 'sess' }, { name: 'sess-2', group: 'sess' }])
    const session = await env.m.startSession()
    try {
      const o = await observe(env, 'items', () => Item.updateMany({ group: 'sess' }, { $inc: { n: 1 } }, { session }))
      expectCovered(env, o)
      const [find, write] = o.commands
      expect([find.kind, write.kind]).toEqual(['find', 'write'])
      expect(find.lsid).not.toBe(null)
      expect(find.lsid).toBe(write.lsid)
    } finally {
      await session.endSession()
    }

    // FerretDB implements no collation: there the find fails, which must be reported and fall
    // back to a collection mark; a real mongod answers it. Either way the find carried it.
    const collation = { locale: 'en', strength: 2 }
    const o = await observe(env, 'items', () =>
      Item.updateMany({ group: 'SESS' }, { $inc: { n: 1 } }, { collation }).then((r) => r, (err) => err)
    )
    const find = o.commands.find((e) => e.kind === 'find')
    expect(find.collation).toEqual(collation)
    if (o.errors.length > 0) {
      expect(o.errors.map((e) => e.context)).toEqual([{ hook: 'pre:updateMany', model: 'Item', collection: 'items', db: env.db }])
      expect(o.preCollection).toBe(true)
    } else {
      expect(o.changed.filter((k) => !o.preIds.has(k))).toEqual([])
    }
  })

  it('concurrent insertMany / bulkWrite calls each mark their own documents', async () => {
    const { Item } = env.models
    const o = await observe(env, 'items', () =>
      Promise.all([
        Item.bulkWrite([{ insertOne: { document: { name: 'cc-1' } } }, { updateOne: { filter: { name: 'cc-x' }, update: { $set: { n: 1 } }, upsert: true } }]),
        Item.insertMany([{ name: 'cc-2' }, { name: 'cc-3' }]),
        Item.bulkWrite([{ insertOne: { document: { name: 'cc-4' } } }, { updateOne: { filter: { name: 'cc-y' }, update: { $set: { n: 1 } }, upsert: true } }])
      ])
    )
    expect(o.appeared).toHaveLength(6)
    expectCovered(env, o, { post: false })
  })
})

// ---- failures and connection states (one Mongoose version is enough where nothing differs) ----

describe.each(VERSIONS)('%s: sink failures and buffering', (label, lib) => {
  const dbName = `${DB_PREFIX}_${label.replace(/\W/g, '')}_edge`

  afterAll(async () => {
    await plain.db(dbName).dropDatabase()
  })

  it('a throwing sink.mark or onError never reaches the app write', async () => {
    const m = new lib.Mongoose()
    const seen = []
    m.plugin(
      createPlugin({
        mark () {
          throw new Error('sink down')
        },
        isExcluded: () => false,
        onError (err, ctx) {
          seen.push([err.message, ctx.hook])
          throw new Error('onError down too')
        }
      })
    )
    const Thing = m.model('Thing', new m.Schema({ n: Number }), 'things')
    await m.connect(server.uri, { dbName })
    try {
      const doc = await Thing.create({ n: 1 })
      await Thing.updateMany({ n: 1 }, { $inc: { n: 1 } })
      await Thing.insertMany([{ n: 5 }])
      await Thing.bulkWrite([{ deleteOne: { filter: { _id: doc._id } } }])
      expect(await plain.db(dbName).collection('things').countDocuments()).toBe(1)
      expect(seen).toContainEqual(['sink down', 'pre:save'])
      expect(seen).toContainEqual(['sink down', 'pre:updateMany'])
      expect(seen).toContainEqual(['sink down', 'post:bulkWrite'])
    } finally {
      await m.disconnect()
    }
  })

  it('rejects an invalid sink with a clear error', () => {
    expect(() => createPlugin({})).toThrow(/sink.mark must be a function/)
    expect(() => createPlugin({ mark () {}, isExcluded () {}, onError () {}, queryMarkCap: 0 })).toThrow(/queryMarkCap/)
  })

  it('a write buffered before the connection opens is marked with the right database', async () => {
    const m = new lib.Mongoose()
    const rec = makeRecorder()
    m.plugin(createPlugin(rec.sink))
    const Early = m.model('Early', new m.Schema({ n: Number }), 'early')
    const created = Early.create({ n: 1 }) // buffered: not connected yet
    const updated = Early.updateMany({ n: { $gte: 0 } }, { $set: { n: 2 } }).exec()
    await m.connect(server.uri, { dbName })
    try {
      const doc = await created
      await updated
      const marks = rec.events.map((e) => e.op)
      expect(marks.length).toBeGreaterThan(0)
      expect(marks.every((op) => op.db === dbName && op.collection === 'early')).toBe(true)
      expect(marks.map((op) => idKey(op.id))).toContain(idKey(doc._id))
      expect(rec.errors).toEqual([])
    } finally {
      await m.disconnect()
    }
  })
})
