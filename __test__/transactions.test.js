// Writes inside multi-document transactions reach Atlas in their committed state, on Mongoose 9
// and 8, through the real engine against a real server pair. The post-write marks of a
// transaction's writes must take effect only after its commit: each scenario pauses before the
// commit and checks the engine has not drained them (the old capture released them there and the
// worker sent the pre-commit state), then, after the commit and flush(), that every collection on
// Atlas equals local byte for byte. Runs where the local server has transactions (a probe in
// helpers/capabilities.js); elsewhere a test asserts the refusal and names it.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { useServers, uniqueDbName } from './helpers/servers.js'
import { startSyncEnv, MONGOOSE_VERSIONS } from './helpers/syncenv.js'
import { waitFor } from './helpers/wait.js'
import { FIND_ONE_AND_DELETE_OPTS } from './helpers/writeops.js'

const require = createRequire(import.meta.url)
const { probeTransactions } = require('./helpers/capabilities.js')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { createSync } = require('../index.js')
const { MongoClient, ObjectId: DriverObjectId } = require('mongodb')

const ROUNDS = Number(process.env.DUALSYNC_TXN_ROUNDS || 20)
// How long each scenario holds its transaction open before committing, spent in a flush() that
// must NOT complete: long enough for the worker (interval 0 here) to read and send anything it
// was released to send.
const PAUSE_MS = 400

const servers = await useServers()
const txn = await probeTransactions(servers.local.uri)
if (!txn.supported) {
  console.warn(`transactions.test.js: the transaction scenarios do not run on this test bed: ${txn.reason}`)
}

describe('transaction capability of the local test server', () => {
  it.runIf(!txn.supported)(`refuses transactions, so the scenarios below do not run (${txn.reason})`, () => {
    expect(txn.supported).toBe(false)
    expect(txn.reason).toMatch(/refused|visible|missing/)
  })
  it.runIf(txn.supported)('runs transactions (isolation until commit)', () => {
    expect(txn.reason).toMatch(/invisible until the commit/)
  })
})

function defineModels (m) {
  const { Schema } = m
  // Writes inside connection.transaction() without a `session` option join the transaction.
  m.set('transactionAsyncLocalStorage', true)
  return {
    Stock: m.model('Stock', new Schema({ sku: String, qty: Number }), 'stocks'),
    Order: m.model('Order', new Schema({ sku: String, qty: Number, round: Number, attempt: Number }), 'orders'),
    Account: m.model('Account', new Schema({ name: String, balance: Number }), 'accounts'),
    Transfer: m.model('Transfer', new Schema({
      from: Schema.Types.ObjectId,
      to: Schema.Types.ObjectId,
      amount: Number,
      round: Number
    }), 'transfers')
  }
}

describe.runIf(txn.supported).each(MONGOOSE_VERSIONS)('writes in transactions reach Atlas committed (%s)', (label, lib) => {
  let env, M
  const { ObjectId } = lib.Types

  beforeAll(async () => {
    env = await startSyncEnv(servers, { lib, prefix: `txn_${label.replace(/\W/g, '')}`, defineModels })
    M = env.models
  })
  afterAll(async () => {
    await env?.close()
  })

  /** The pause before a commit: the engine must still hold the transaction's documents. */
  async function pauseBeforeCommit () {
    const drained = await env.sync.flush({ timeoutMs: PAUSE_MS })
    expect(drained, 'the engine drained an open transaction\'s documents before its commit').toBe(false)
  }

  const onAtlas = (coll, filter) => env.atlas.collection(coll).findOne(filter)
  const onLocalOutside = (coll, filter) => env.local.collection(coll).findOne(filter)

  it(`stock: bulkWrite of $inc in startTransaction/commitTransaction, paused before the commit (${ROUNDS} rounds)`, async () => {
    const { Stock, Order } = M
    const skus = ['s1', 's2', 's3', 's4', 's5']
    await Stock.insertMany(skus.map((sku) => ({ sku, qty: 1000 })))
    await env.converge()
    const expected = Object.fromEntries(skus.map((s) => [s, 1000]))
    for (let round = 1; round <= ROUNDS; round++) {
      const session = await env.m.startSession()
      session.startTransaction()
      await Stock.bulkWrite(skus.map((sku, i) => ({
        updateOne: { filter: { sku }, update: { $inc: { qty: -(i + round) } } }
      })), { session })
      await Order.insertMany([{ sku: skus[round % skus.length], qty: round, round }], { session })
      // Really inside the transaction: other sessions still see the old quantity.
      expect((await onLocalOutside('stocks', { sku: 's1' })).qty).toBe(expected.s1)
      await pauseBeforeCommit()
      await session.commitTransaction()
      await session.endSession()
      skus.forEach((sku, i) => { expected[sku] -= i + round })
      await env.converge()
      for (const sku of skus) expect((await onAtlas('stocks', { sku })).qty).toBe(expected[sku])
    }
    expect(await env.atlas.collection('orders').countDocuments({})).toBe(ROUNDS)
  })

  it(`connection.transaction() across two collections, with and without a session option (${ROUNDS} rounds)`, async () => {
    const { Account, Transfer } = M
    const [a, b] = await Account.create([{ name: 'a', balance: 10_000 }, { name: 'b', balance: 0 }])
    await env.converge()
    let moved = 0
    for (let round = 1; round <= ROUNDS; round++) {
      const amount = round * 3
      const explicit = round % 2 === 0
      await env.m.connection.transaction(async (session) => {
        const opt = explicit ? { session } : {} // {}: the transaction AsyncLocalStorage supplies it
        await Account.updateOne({ _id: a._id }, { $inc: { balance: -amount } }, opt)
        const to = await Account.findById(b._id, null, opt)
        to.balance += amount
        await to.save(opt)
        await Transfer.create([{ from: a._id, to: b._id, amount, round }], opt)
        expect((await onLocalOutside('accounts', { _id: b._id })).balance).toBe(moved)
        await pauseBeforeCommit()
      })
      moved += amount
      await env.converge()
      expect((await onAtlas('accounts', { _id: a._id })).balance).toBe(10_000 - moved)
      expect((await onAtlas('accounts', { _id: b._id })).balance).toBe(moved)
    }
    expect(await env.atlas.collection('transfers').countDocuments({})).toBe(ROUNDS)
  })

  it(`withTransaction() retried after a transient error: only the committed attempt counts (${ROUNDS} rounds)`, async () => {
    const { Stock, Order } = M
    await Stock.create({ sku: 'retry', qty: 0 })
    await env.converge()
    for (let round = 1; round <= ROUNDS; round++) {
      const session = await env.m.startSession()
      let attempts = 0
      await session.withTransaction(async () => {
        attempts++
        await Stock.updateOne({ sku: 'retry' }, { $inc: { qty: 1 } }, { session })
        await Order.create([{ sku: 'retry', qty: 1, round, attempt: attempts }], { session })
        if (attempts === 1) {
          // The label the driver retries on (a write conflict carries the same one).
          const err = new lib.mongo.MongoError('forced transient failure of the first attempt')
          err.addErrorLabel('TransientTransactionError')
          throw err
        }
        await pauseBeforeCommit()
      })
      await session.endSession()
      expect(attempts).toBe(2)
      await env.converge()
      expect((await onAtlas('stocks', { sku: 'retry' })).qty).toBe(round)
      expect(await env.atlas.collection('orders').countDocuments({ sku: 'retry', attempt: 1 })).toBe(0)
      expect(await env.atlas.collection('orders').countDocuments({ sku: 'retry', attempt: 2 })).toBe(round)
    }
  })

  it(`aborted transactions leave Atlas as it was (${ROUNDS} rounds)`, async () => {
    const { Stock, Order } = M
    await Stock.insertMany([{ sku: 'ab1', qty: 50 }, { sku: 'ab2', qty: 60 }])
    await env.converge()
    const before = await env.atlas.collection('stocks').find({}).sort({ _id: 1 }).toArray()
    const ordersBefore = await env.atlas.collection('orders').countDocuments({})
    for (let round = 1; round <= ROUNDS; round++) {
      const writes = async (session) => {
        await Stock.bulkWrite([
          { updateOne: { filter: { sku: 'ab1' }, update: { $inc: { qty: -round } } } },
          { deleteOne: { filter: { sku: 'ab2' } } }
        ], { session })
        await Order.create([{ sku: 'ab1', qty: round, round }], { session })
        await pauseBeforeCommit()
      }
      if (round % 2 === 1) {
        const session = await env.m.startSession()
        session.startTransaction()
        await writes(session)
        await session.abortTransaction()
        await session.endSession()
      } else {
        // connection.transaction() aborts when the function throws.
        await expect(env.m.connection.transaction(async (session) => {
          await writes(session)
          throw new Error('app gives up')
        })).rejects.toThrow('app gives up')
      }
      await env.converge()
      expect(await env.atlas.collection('stocks').find({}).sort({ _id: 1 }).toArray()).toEqual(before)
      expect(await env.atlas.collection('orders').countDocuments({})).toBe(ordersBefore)
    }
  })

  it(`a transaction that deletes and re-creates a document (and creates then deletes another) (${ROUNDS} rounds)`, async () => {
    const { Stock } = M
    const id = new ObjectId()
    await Stock.create({ _id: id, sku: 'recreated', qty: 0 })
    await env.converge()
    for (let round = 1; round <= ROUNDS; round++) {
      const session = await env.m.startSession()
      session.startTransaction()
      const temp = new ObjectId()
      await Stock.deleteOne({ _id: id }, { session })
      await Stock.create([{ _id: id, sku: 'recreated', qty: round }], { session })
      await Stock.create([{ _id: temp, sku: 'temporary', qty: round }], { session })
      await Stock.findOneAndDelete({ sku: 'temporary' }, { ...FIND_ONE_AND_DELETE_OPTS, session })
      await pauseBeforeCommit()
      await session.commitTransaction()
      await session.endSession()
      await env.converge()
      expect((await onAtlas('stocks', { _id: id })).qty).toBe(round)
      expect(await onAtlas('stocks', { _id: temp })).toBeNull()
    }
  })

  it('no capture failures over the transaction scenarios', () => {
    expect(env.sync.metrics().hookErrors).toBe(0)
  })
})

// A transaction held open past the engine's intent delay (30 s): the held intent is sent on its
// own, reading the state before the commit (what Atlas already had: harmless); the post marks the
// commit releases then read the committed state. One round (it waits the real delay), Mongoose 9.
describe.runIf(txn.supported)('a transaction open longer than the intent delay', () => {
  const [, lib] = MONGOOSE_VERSIONS[0]
  let env
  afterAll(async () => {
    await env?.close()
  })

  it('still reaches Atlas in its committed state', async () => {
    env = await startSyncEnv(servers, { lib, prefix: 'txn_slow', defineModels })
    const { Stock } = env.models
    await Stock.create({ sku: 'slow', qty: 1 })
    await env.converge()
    const applied = env.sync.metrics().applied.total
    const session = await env.m.startSession()
    session.startTransaction()
    await Stock.updateOne({ sku: 'slow' }, { $inc: { qty: 5 } }, { session })
    await waitFor('the held intent to be sent after its delay', () => env.sync.metrics().applied.total > applied, { timeoutMs: 110_000 })
    expect((await env.atlas.collection('stocks').findOne({ sku: 'slow' })).qty).toBe(1)
    await session.commitTransaction()
    await session.endSession()
    await env.converge()
    expect((await env.atlas.collection('stocks').findOne({ sku: 'slow' })).qty).toBe(6)
  }, 180_000)
})

// The commit is acknowledged and the process dies before the post-write marks the commit
// releases are journaled: the pre-write intents are in the journal, and the next start replays
// them as plain marks (their writes either committed or never will).
describe.runIf(txn.supported)('kill -9 between a commit and its post-write marks', () => {
  it('replays the journaled intents after the restart: Atlas gets the committed state', async () => {
    const db = uniqueDbName('txn_crash')
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-txn-crash-'))
    const localUri = `${servers.local.uri}/${db}`
    const atlasUri = `${servers.atlas.uri}/${db}`
    const local = new MongoClient(servers.local.uri)
    const atlas = new MongoClient(servers.atlas.uri)
    let sync
    try {
      const seed = { _id: new DriverObjectId(), sku: 'crash', qty: 100 }
      await local.db(db).collection('stocks').insertOne({ ...seed })
      await local.db(db).createCollection('orders') // no collection creation inside the transaction
      await atlas.db(db).collection('stocks').insertOne({ ...seed })

      const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'txncommit.js')], {
        env: { ...process.env, LOCAL_URI: localUri, ATLAS_URI: atlasUri, DATA_DIR: dataDir, SKU: 'crash' },
        stdio: ['ignore', 'pipe', 'pipe']
      })
      let stderr = ''
      child.stderr.on('data', (d) => { stderr += d })
      const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
      const line = await new Promise((resolve, reject) => {
        readline.createInterface({ input: child.stdout }).on('line', (l) => {
          if (l === 'committed' || l.startsWith('error')) resolve(l)
        })
        exited.then(({ code }) => reject(new Error(`fixture exited early (code ${code}): ${stderr}`)))
      })
      expect(line).toBe('committed')
      child.kill('SIGKILL')
      expect((await exited).signal).toBe('SIGKILL')
      // Committed locally; nothing sent (the intents were held for their post marks).
      expect((await local.db(db).collection('stocks').findOne({ _id: seed._id })).qty).toBe(93)
      expect((await atlas.db(db).collection('stocks').findOne({ _id: seed._id })).qty).toBe(100)

      sync = await createSync({ enabled: true, localUri, atlasUri, dataDir, workerInterval: 0, logLevel: 'warn' })
      expect(await sync.flush({ timeoutMs: 60_000 })).toBe(true)
      expect(sync.metrics().journal.recovered).toBeGreaterThanOrEqual(2)
      assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, db, ['stocks', 'orders']))
      expect((await atlas.db(db).collection('stocks').findOne({ _id: seed._id })).qty).toBe(93)
      expect(await atlas.db(db).collection('orders').countDocuments({ sku: 'crash' })).toBe(1)
    } finally {
      await sync?.close()
      await Promise.all([local.close(), atlas.close()])
      fs.rmSync(dataDir, { recursive: true, force: true })
    }
  })
})
