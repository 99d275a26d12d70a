// Post-write marks wait in memory and ride with the next intent's native call
// (lib/postmarks.js): one call per write instead of two; with the capture ring on, every mark
// goes into the ring as its hook runs and nothing waits. What must still hold: a post mark
// with no write after it is still sent (its held intent is released without waiting for the
// engine's intent timeout), post marks go before the intent that carries them, a mark the
// engine refuses is lost alone and reported with its own hook, and flush() / metrics() /
// close() see every capture made before them.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { useServers, uniqueDbName } from './helpers/servers.js'
import { openTestSync } from './helpers/testsync.js'
import { waitFor } from './helpers/wait.js'

const require = createRequire(import.meta.url)
const mongoose = require('mongoose')
const { MongoClient, ObjectId } = require('mongodb')
const { PendingPosts } = require('../lib/postmarks.js')
const { encodeOp } = require('../lib/wire.js')

let servers, dbName, conn, atlas

beforeAll(async () => {
  servers = await useServers()
  dbName = uniqueDbName('postmarks')
  conn = await mongoose.createConnection(`${servers.local.uri}/${dbName}`).asPromise()
  atlas = new MongoClient(servers.atlas.uri)
  await atlas.connect()
})

afterAll(async () => {
  await conn?.close()
  await atlas?.close()
})

/** Wraps the Sync's capture (ring or native call) to record each send's marks (the engine still gets them). */
function recordCalls (sync) {
  const calls = []
  const real = sync._captureEncoded.bind(sync)
  sync._captureEncoded = (encoded) => {
    calls.push(encoded.map((e) => ({ c: e.c, i: e.i === true })))
    return real(encoded)
  }
  return calls
}

describe('post-write marks', () => {
  it('with the ring on, go into the ring as their hook runs: no native call, nothing waits', async () => {
    const { sync } = await openTestSync(servers, dbName, { dirPrefix: 'dualsync-posts-' })
    try {
      expect(sync._ring).not.toBe(null)
      const schema = new mongoose.Schema({ n: Number })
      schema.plugin(sync.plugin)
      const Ringed = conn.model('PostRinged', schema, 'post_ringed')
      await Ringed.create({ n: 0 }) // the namespace's first marks go by call: the ring learns it
      expect(await sync.flush({ timeoutMs: 60000 })).toBe(true)
      const calls = recordCalls(sync)
      const before = sync._ring.written
      for (let n = 1; n <= 20; n++) {
        await Ringed.create({ n })
        expect(sync._posts.size).toBe(0) // the post mark did not wait for a later send
      }
      expect(calls).toEqual([]) // no mark went through a send (a native call or a deferred ring write)
      expect(sync._ring.written - before).toBe(40) // each write's intent and post mark
      expect(await sync.flush({ timeoutMs: 60000 })).toBe(true)
      const local = await conn.db.collection('post_ringed').countDocuments()
      expect(await atlas.db(dbName).collection('post_ringed').countDocuments()).toBe(local)
    } finally {
      await sync.close({ drainTimeoutMs: 0 })
    }
  })

  it('with the ring off, go with the next write\'s intent, before it: one native call per sequential write', async () => {
    const { sync } = await openTestSync(servers, dbName, { dirPrefix: 'dualsync-posts-', captureRing: false })
    try {
      const schema = new mongoose.Schema({ n: Number })
      schema.plugin(sync.plugin)
      const Item = conn.model('PostItem', schema, 'post_items')
      await Item.create({ n: 0 }) // connection and caches warm
      expect(await sync.flush({ timeoutMs: 60000 })).toBe(true)
      const calls = recordCalls(sync)
      for (let n = 1; n <= 20; n++) await Item.create({ n })
      expect(await sync.flush({ timeoutMs: 60000 })).toBe(true)
      const marks = calls.flat()
      // 20 intents + 20 post marks reached the engine...
      expect(marks.filter((m) => m.i).length).toBe(20)
      expect(marks.filter((m) => !m.i).length).toBe(20)
      // ...in fewer calls than marks, and never an intent before an older post mark.
      // One per write (its intent with the previous write's post mark), plus the last post mark.
      expect(calls.length).toBeLessThanOrEqual(21)
      for (const call of calls) {
        const firstIntent = call.findIndex((m) => m.i)
        if (firstIntent >= 0) expect(call.slice(firstIntent + 1).some((m) => !m.i)).toBe(false)
      }
      const local = await conn.db.collection('post_items').countDocuments()
      expect(await atlas.db(dbName).collection('post_items').countDocuments()).toBe(local)
    } finally {
      await sync.close({ drainTimeoutMs: 0 })
    }
  })

  it('are sent with no write after them: the intent is released without flush() (well before the 30 s intent timeout)', async () => {
    const { sync } = await openTestSync(servers, dbName, { dirPrefix: 'dualsync-posts-' })
    try {
      const schema = new mongoose.Schema({ n: Number })
      schema.plugin(sync.plugin)
      const Lone = conn.model('PostLone', schema, 'post_lone')
      // Its health timer would send waiting marks every 5 s (health reads metrics): without it,
      // only the post mark's own end-of-turn send can release the intent before 30 s.
      clearInterval(sync._healthTimer)
      const doc = await Lone.create({ n: 1 })
      const _id = new ObjectId(doc._id.toHexString()) // the driver's bson major, not Mongoose's
      // Nothing calls into the Sync now (no flush, no metrics).
      const onAtlas = atlas.db(dbName).collection('post_lone')
      await waitFor('the document on Atlas', async () => (await onAtlas.findOne({ _id })) !== null, { timeoutMs: 20000 })
    } finally {
      await sync.close({ drainTimeoutMs: 0 })
    }
  })

  it('a mark the engine refuses is lost alone and reported with its own hook; the others are journaled', async () => {
    const { sync } = await openTestSync(servers, dbName, { dirPrefix: 'dualsync-posts-' })
    try {
      sync.pause()
      const errors = []
      const posts = new PendingPosts((e) => sync._enqueueEncoded(e), (err, ctx) => errors.push({ code: err.code, hook: ctx.hook }))
      const op = (collection, extra) => encodeOp({ collection, id: `${collection}-1`, db: dbName, ...extra }, dbName)
      const before = sync.metrics().enqueued
      posts.add([op('good_a')], { hook: 'post:a' })
      // Valid for the JS encoder, refused by the engine (a collection name cannot start with $).
      posts.add([op('$bad')], { hook: 'post:bad' })
      posts.sendWith([op('good_b', { intent: true })], { hook: 'pre:b' })
      expect(errors).toEqual([{ code: 'ERR_SYNC_INVALID', hook: 'post:bad' }])
      expect(sync.metrics().enqueued - before).toBe(2)
      expect(posts.size).toBe(0)
    } finally {
      await sync.close({ drainTimeoutMs: 0 })
    }
  })

  it('waiting post marks are journaled by metrics(), flush() and close(); after close each is reported once', async () => {
    const { sync } = await openTestSync(servers, dbName, { dirPrefix: 'dualsync-posts-' })
    sync.pause()
    const before = sync.metrics().enqueued
    const schema = new mongoose.Schema({ n: Number })
    schema.plugin(sync.plugin)
    const Seen = conn.model('PostSeen', schema, 'post_seen')
    await Seen.create({ n: 1 })
    // The intent went at once; the post mark is journaled before metrics() counts.
    expect(sync.metrics().enqueued - before).toBe(2)
    await Seen.create({ n: 2 })
    const drained = sync.close({ drainTimeoutMs: 0 })
    expect(sync._posts.size).toBe(0) // close() took it before closing the engine
    await drained
    // After close: a waiting post mark is reported as lost after close, once.
    sync._posts.add([encodeOp({ collection: 'post_seen', id: 'x', db: dbName }, dbName)], { hook: 'mark', collection: 'post_seen', marks: 1 })
    sync._posts.flush()
    expect(sync.health().reasons.join('\n')).toMatch(/1 capture\(s\) made after close\(\) finished were lost/)
  })
})
