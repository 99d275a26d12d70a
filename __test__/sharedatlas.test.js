// Shared Atlas: two cafés (each its own local server) and a cloud app write into ONE Atlas database,
// documents tagged by organization, each installation scoped to its own. Concurrent writes, a
// full sync and a verify from each café must leave Atlas holding exactly each café's documents
// (byte for byte, per scope) plus the cloud app's, none deleted or changed by another writer.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import fc from 'fast-check'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import { useServers, uniqueDbName } from './helpers/servers.js'
import { openTestSync } from './helpers/testsync.js'
import { idKeys } from './helpers/jobsync.js'
import testbed from '../scripts/testbed.js'

const require = createRequire(import.meta.url)
const mongoose = require('mongoose')
const { MongoClient, BSON } = mongoose.mongo

let servers
let localB // café B's own local server (café A uses the pair's)
const open = []

beforeAll(async () => {
  servers = await useServers()
  localB = await testbed.startServer({ name: 'cafe-b-local' })
})

afterAll(async () => {
  for (const c of open.splice(0)) await c.close()
  if (localB) await localB.stop()
})

/** Raw documents of a collection matching `filter`, by type-aware `_id` key. */
async function rawDocs (coll, filter = {}) {
  const out = new Map()
  for await (const raw of coll.find(filter, { raw: true })) {
    const { _id } = BSON.deserialize(raw, { promoteValues: false })
    out.set(BSON.EJSON.stringify({ _id }, { relaxed: false }), Buffer.from(raw))
  }
  return out
}

/** Asserts two raw-document maps are equal byte for byte, naming the first mismatches. */
function expectSameBytes (actual, expected, what) {
  const missing = [...expected.keys()].filter((k) => !actual.has(k))
  const extra = [...actual.keys()].filter((k) => !expected.has(k))
  const different = [...expected.keys()].filter((k) => actual.has(k) && !actual.get(k).equals(expected.get(k)))
  expect({ missing, extra, different }, what).toEqual({ missing: [], extra: [], different: [] })
}

/**
 * One installation: its own local database, the shared Atlas database, a scope on
 * `organization`, and a Mongoose instance whose `Bill` model is captured by its sync.
 */
async function openCafe (name, atlasDb, org, syncOptions = {}, local = servers.local) {
  const db = uniqueDbName(`shared_${name}`)
  const lines = []
  const logger = { debug () {}, info: (m) => lines.push(m), warn: (m) => lines.push(m), error: (m) => lines.push(m) }
  const { sync, dataDir } = await openTestSync({ local, atlas: servers.atlas }, db, {
    dirPrefix: `dualsync-shared-${name}-`,
    atlasUri: `${servers.atlas.uri}/${atlasDb}`,
    scope: { '*': { organization: org } },
    extrasPolicy: null, // the real default (report), not the pure-mirror tests' delete
    batchSize: 20,
    // Two engines write one FerretDB database: 2 lanes × 16 statements each stays well under its
    // 100 pooled connections per database (see ARCHITECTURE "Sending to Atlas").
    concurrency: 2,
    logger,
    logLevel: 'info',
    ...syncOptions
  })
  const m = new mongoose.Mongoose()
  m.plugin(sync.plugin)
  const Bill = m.model('Bill', new m.Schema({ organization: m.Schema.Types.ObjectId, n: Number, total: Number, note: String }))
  // App-chosen string _ids (tab numbers), for the property test.
  const Tab = m.model('Tab', new m.Schema({ _id: String, organization: m.Schema.Types.ObjectId, total: Number }))
  await m.connect(`${local.uri}/${db}`)
  await Promise.all([Bill.init(), Tab.init()])
  const driver = new MongoClient(local.uri)
  await driver.connect()
  const cafe = {
    name,
    db,
    org,
    sync,
    Bill,
    Tab,
    lines,
    local: driver.db(db).collection('bills'),
    localDb: driver.db(db),
    async flush () {
      expect(await sync.flush({ timeoutMs: 120_000 }), `${name} drained`).toBe(true)
    },
    async close () {
      await m.disconnect()
      await sync.close({ drainTimeoutMs: 0 })
      await driver.close()
      fs.rmSync(dataDir, { recursive: true, force: true })
    }
  }
  open.push(cafe)
  return cafe
}

/** A café's writes: creates, inserts, updates by filter and by _id, deletes, concurrently. */
async function work (cafe) {
  const { Bill, org } = cafe
  const made = await Bill.create(Array.from({ length: 30 }, (_, n) => ({ organization: org, n, total: n * 100, note: cafe.name })))
  await Bill.insertMany(Array.from({ length: 20 }, (_, i) => ({ organization: org, n: 100 + i, total: i })))
  await Promise.all([
    Bill.updateMany({ organization: org, n: { $lt: 10 } }, { $inc: { total: 1 } }),
    Bill.deleteMany({ organization: org, n: { $gte: 110 } }),
    ...made.slice(20, 25).map((d) => Bill.deleteOne({ _id: d._id })),
    ...made.slice(10, 15).map((d) => Bill.updateOne({ _id: d._id }, { $set: { note: `${cafe.name} edited` } }))
  ])
}

describe('shared Atlas: two cafés and a cloud app in one Atlas database', () => {
  it('each café syncs, full-syncs and verifies only its own scope; nothing of the other or of the cloud app is touched', async () => {
    const atlasDb = uniqueDbName('shared_atlas')
    const [orgA, orgB] = [new BSON.ObjectId(), new BSON.ObjectId()]
    // The cloud app's documents, created directly on Atlas: one in each café's scope, one in none.
    const cloud = [
      { _id: new BSON.ObjectId(), organization: orgA, note: 'cloud app order for A' },
      { _id: new BSON.ObjectId(), organization: orgB, note: 'cloud app order for B' },
      { _id: new BSON.ObjectId(), organization: new BSON.ObjectId(), note: 'another organization' }
    ]
    const atlasClient = new MongoClient(servers.atlas.uri)
    await atlasClient.connect()
    try {
      const atlas = atlasClient.db(atlasDb).collection('bills')
      await atlas.insertMany(cloud)
      const cloudBefore = await rawDocs(atlas, { _id: { $in: cloud.map((c) => c._id) } })

      const [a, b] = await Promise.all([openCafe('a', atlasDb, orgA), openCafe('b', atlasDb, orgB, {}, localB)])
      await Promise.all([work(a), work(b)])
      await Promise.all([a.flush(), b.flush()])

      // A full sync from each, one after the other and then at once; each drains.
      for (const round of [[a], [b], [a, b]]) {
        const snaps = await Promise.all(round.map((c) => c.sync.fullSync().done))
        await Promise.all(round.map((c) => c.flush()))
        for (const [i, snap] of snaps.entries()) {
          const c = round[i]
          expect(snap.state, c.name).toBe('done')
          const bills = snap.reports.find((r) => r.collection === 'bills')
          // Only the café's own documents were read: its local count, and on Atlas its own plus
          // the cloud app's one in its scope.
          const mine = await c.local.countDocuments({})
          expect(bills, c.name).toMatchObject({ localCount: mine, atlasCount: mine + 1, missingOnAtlas: 0, different: 0, extraOnAtlas: 1, extrasPolicy: 'report', extrasReported: 1, extrasDeleted: 0 })
          expect(bills.scope).toEqual({ organization: { $oid: c.org.toHexString() } })
          expect(snap.repairsQueued, c.name).toBe(0)
        }
      }
      // The first full sync said what a pure mirror would delete and how to change the policy.
      for (const c of [a, b]) {
        const line = c.lines.find((l) => /exist on Atlas but not locally/.test(l))
        expect(line, c.lines.join('\n')).toMatch(/extras policy "report" leaves them in place/)
        expect(line).toMatch(/SYNC_EXTRAS_POLICY=\{"bills":"delete"\}/)
      }

      // A verify from each: consistent within its scope, the cloud app's document listed as extra.
      for (const c of [a, b]) {
        const snap = await c.sync.verify().done
        const bills = snap.reports.find((r) => r.collection === 'bills')
        const own = cloud.find((d) => d.organization.equals(c.org))
        expect(bills).toMatchObject({ missingOnAtlas: 0, different: 0, extraOnAtlas: 1, extrasReported: 1 })
        expect(idKeys(bills.samplesExtra)).toEqual(idKeys([{ $oid: own._id.toHexString() }]))
        const m = c.sync.metrics()
        expect(m.scope.rules['*']).toEqual({ scope: { organization: { $oid: c.org.toHexString() } }, extrasPolicy: 'report' })
        expect(m.scope.extrasReported).toBe(2) // one per full sync this café ran (its own round and the joint one)
        expect(m.scope.extrasDeleted).toBe(0)
      }

      // Atlas holds exactly A's documents in A's scope and B's in B's (byte for byte), plus the
      // cloud app's documents unchanged.
      for (const c of [a, b]) {
        const onAtlas = await rawDocs(atlas, { organization: c.org, _id: { $nin: cloud.map((d) => d._id) } })
        expectSameBytes(onAtlas, await rawDocs(c.local), `Atlas documents of café ${c.name}`)
      }
      expectSameBytes(await rawDocs(atlas, { _id: { $in: cloud.map((d) => d._id) } }), cloudBefore, 'the cloud app documents')
      const total = await atlas.countDocuments({})
      expect(total).toBe((await a.local.countDocuments({})) + (await b.local.countDocuments({})) + cloud.length)
    } finally {
      await atlasClient.close()
    }
  })

  it('an _id two installations both write: the second is dead-lettered with the reason, the first is left as it was', async () => {
    const atlasDb = uniqueDbName('shared_clash')
    const [orgA, orgB] = [new BSON.ObjectId(), new BSON.ObjectId()]
    const [a, b] = await Promise.all([openCafe('ca', atlasDb, orgA), openCafe('cb', atlasDb, orgB, { maxRetries: 0, backoffMinMs: 10, backoffMaxMs: 50 }, localB)])
    const atlasClient = new MongoClient(servers.atlas.uri)
    await atlasClient.connect()
    try {
      const atlas = atlasClient.db(atlasDb).collection('bills')
      const same = new BSON.ObjectId()
      await a.Bill.create({ _id: same, organization: orgA, n: 1, note: 'A owns this _id' })
      await a.flush()
      const before = await rawDocs(atlas, { _id: same })
      await b.Bill.create({ _id: same, organization: orgB, n: 2, note: 'B reuses it' })
      await b.flush()
      expectSameBytes(await rawDocs(atlas, { _id: same }), before, 'A\'s document after B wrote the same _id')
      const dead = b.sync.deadLetters()
      expect(dead).toHaveLength(1)
      expect(dead[0]).toMatchObject({ collection: 'bills', code: 11000 })
      expect(dead[0].message).toMatch(/outside this installation's scope \{"organization":\{"\$oid":"[0-9a-f]{24}"\}\}: left untouched/)

      // B deletes its copy: the scoped delete matches nothing of A's.
      await b.Bill.deleteOne({ _id: same })
      await b.flush()
      expectSameBytes(await rawDocs(atlas, { _id: same }), before, 'A\'s document after B deleted its own')
      // A deletes its own: gone from Atlas.
      await a.Bill.deleteOne({ _id: same })
      await a.flush()
      expect(await atlas.countDocuments({ _id: same })).toBe(0)
    } finally {
      await atlasClient.close()
    }
  })

  it('under delete, a full sync deletes in-scope extras only, and a document that leaves the scope is removed from Atlas', async () => {
    const atlasDb = uniqueDbName('shared_del')
    const [orgA, orgB] = [new BSON.ObjectId(), new BSON.ObjectId()]
    const a = await openCafe('da', atlasDb, orgA, { extrasPolicy: 'delete' })
    const atlasClient = new MongoClient(servers.atlas.uri)
    await atlasClient.connect()
    try {
      const atlas = atlasClient.db(atlasDb).collection('bills')
      const stale = { _id: new BSON.ObjectId(), organization: orgA, note: 'left over on Atlas' }
      const theirs = { _id: new BSON.ObjectId(), organization: orgB, note: 'another café' }
      await atlas.insertMany([stale, theirs])
      const theirsBefore = await rawDocs(atlas, { _id: theirs._id })
      const kept = await a.Bill.create({ organization: orgA, n: 1 })
      const moved = await a.Bill.create({ organization: orgA, n: 2 })
      await a.flush()

      const snap = await a.sync.fullSync().done
      await a.flush()
      const bills = snap.reports.find((r) => r.collection === 'bills')
      expect(bills).toMatchObject({ extraOnAtlas: 1, extrasPolicy: 'delete', extrasDeleted: 1, extrasReported: 0 })
      expect(await atlas.countDocuments({ _id: stale._id })).toBe(0)
      expectSameBytes(await rawDocs(atlas, { _id: theirs._id }), theirsBefore, 'the other café\'s document')
      expect(a.sync.metrics().scope.extrasDeleted).toBe(1)
      expect(a.lines.some((l) => /deleting 1 document\(s\) of "bills"/.test(l)), a.lines.join('\n')).toBe(true)

      // A document re-tagged to another organization leaves A's scope: A no longer owns it on
      // Atlas, so its copy there is deleted, and nothing outside the scope is written.
      await a.Bill.updateOne({ _id: moved._id }, { $set: { organization: orgB } })
      await a.flush()
      expect(await atlas.countDocuments({ _id: moved._id })).toBe(0)
      expect(await atlas.countDocuments({ _id: kept._id })).toBe(1)
    } finally {
      await atlasClient.close()
    }
  })
  it('collection reconciles (writes above the mark cap) stay in scope and follow the extras policy', async () => {
    const atlasDb = uniqueDbName('shared_cap')
    const [orgA, orgB] = [new BSON.ObjectId(), new BSON.ObjectId()]
    const a = await openCafe('cap', atlasDb, orgA, { queryMarkCap: 5 })
    const atlasClient = new MongoClient(servers.atlas.uri)
    await atlasClient.connect()
    try {
      const atlas = atlasClient.db(atlasDb).collection('bills')
      const theirs = Array.from({ length: 10 }, (_, n) => ({ _id: new BSON.ObjectId(), organization: orgB, n, total: 0 }))
      await atlas.insertMany(theirs)
      const theirsBefore = await rawDocs(atlas, { organization: orgB })
      await a.Bill.insertMany(Array.from({ length: 20 }, (_, n) => ({ organization: orgA, n, total: 0 })))
      await a.flush()

      // 20 matches > cap 5: the collection is reconciled, within A's scope only.
      await a.Bill.updateMany({ organization: orgA }, { $inc: { total: 7 } })
      await a.flush()
      expectSameBytes(await rawDocs(atlas, { organization: orgA }), await rawDocs(a.local), 'A after the update over the cap')
      // Again over the cap, now deleting: under report the reconcile lists the 12 deleted
      // documents as extras and leaves them (the documented limit of report).
      await a.Bill.deleteMany({ organization: orgA, n: { $gte: 8 } })
      await a.flush()
      expect(await a.local.countDocuments({})).toBe(8)
      expect(await atlas.countDocuments({ organization: orgA })).toBe(20)
      // Counted per reconcile that finds them (the write marks the collection before and after it).
      const { extrasReported, extrasDeleted } = a.sync.metrics().scope
      expect(extrasReported).toBeGreaterThanOrEqual(12)
      expect(extrasReported % 12).toBe(0)
      expect(extrasDeleted).toBe(0)
      expect(a.lines.some((l) => /12 document\(s\) in scope exist on Atlas but not locally; extras policy "report"/.test(l)), a.lines.join('\n')).toBe(true)
      // B's documents were neither compared nor written.
      expectSameBytes(await rawDocs(atlas, { organization: orgB }), theirsBefore, 'the other café\'s documents')
    } finally {
      await atlasClient.close()
    }
  })
  // Property: whatever a scoped café does to its documents (create, update, re-tag to another
  // organization and back, delete, updateMany, a full sync), once drained Atlas holds exactly
  // its local in-scope documents, and the other organization's documents on Atlas are untouched.
  const RUNS = Number(process.env.DUALSYNC_PROPERTY_RUNS) || 25
  it(`random writes of a scoped café keep Atlas equal within its scope and leave the rest alone (${RUNS} runs)`, async () => {
    const atlasDb = uniqueDbName('shared_prop')
    const [orgA, orgB] = [new BSON.ObjectId(), new BSON.ObjectId()]
    const a = await openCafe('prop', atlasDb, orgA, { extrasPolicy: 'delete' })
    const atlasClient = new MongoClient(servers.atlas.uri)
    await atlasClient.connect()
    const atlas = atlasClient.db(atlasDb).collection('tabs')
    const theirs = Array.from({ length: 4 }, (_, i) => ({ _id: `b${i}`, organization: orgB, total: i }))
    const org = (k) => (k === 'A' ? orgA : orgB)
    const id = fc.integer({ min: 0, max: 5 }).map((i) => `t${i}`)
    const opArb = fc.oneof(
      fc.record({ kind: fc.constant('create'), id, org: fc.constantFrom('A', 'A', 'B'), total: fc.integer({ min: 0, max: 99 }) }),
      fc.record({ kind: fc.constant('update'), id, total: fc.integer({ min: 0, max: 99 }) }),
      fc.record({ kind: fc.constant('retag'), id, org: fc.constantFrom('A', 'B') }),
      fc.record({ kind: fc.constant('delete'), id }),
      fc.record({ kind: fc.constant('updateMany'), org: fc.constantFrom('A', 'B') }),
      fc.record({ kind: fc.constant('fullSync') })
    )
    const run = async (op) => {
      switch (op.kind) {
        case 'create':
          try {
            await a.Tab.create({ _id: op.id, organization: org(op.org), total: op.total })
          } catch (e) {
            if (e.code !== 11000) throw e // it exists already: fine
          }
          return
        case 'update': return a.Tab.updateOne({ _id: op.id }, { $set: { total: op.total } })
        case 'retag': return a.Tab.updateOne({ _id: op.id }, { $set: { organization: org(op.org) } })
        case 'delete': return a.Tab.deleteOne({ _id: op.id })
        case 'updateMany': return a.Tab.updateMany({ organization: org(op.org) }, { $inc: { total: 1 } })
        case 'fullSync': {
          await a.flush()
          const snap = await a.sync.fullSync({ collections: ['tabs'] }).done
          expect(snap.state).toBe('done')
        }
      }
    }
    let compared = 0
    try {
      await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 15 }), async (ops) => {
        await a.flush()
        await Promise.all([a.localDb.collection('tabs').deleteMany({}), atlas.deleteMany({})])
        await atlas.insertMany(theirs)
        const theirsBefore = await rawDocs(atlas, { organization: orgB })
        for (const op of ops) await run(op)
        await a.flush()
        const mine = await rawDocs(a.localDb.collection('tabs'), { organization: orgA })
        expectSameBytes(await rawDocs(atlas, { organization: orgA }), mine, 'Atlas within the scope')
        expectSameBytes(await rawDocs(atlas, { organization: orgB }), theirsBefore, 'the other organization on Atlas')
        expect(await atlas.countDocuments({})).toBe(mine.size + theirs.length)
        compared += mine.size
      }), { numRuns: RUNS })
      expect(compared).toBeGreaterThan(0)
      expect(a.sync.deadLetters()).toEqual([])
    } finally {
      await atlasClient.close()
    }
  }, Math.max(300_000, RUNS * 15_000))
})
