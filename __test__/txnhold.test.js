// lib/plugin/txn.js on the drivers of Mongoose 9 and 8: marks held on a real ClientSession while
// it is in a transaction, sent when the transaction ends. The transactions here run no operation,
// so the driver ends them without a server round trip and this runs on every test bed (but for
// the failed commit, cut on a real link through the TCP proxy); the end-to-end scenarios with
// writes are in transactions.test.js.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { startServer } = require('../scripts/testbed.js')
const { holdUntilTransactionEnds, inTransaction } = require('../lib/plugin/txn.js')
const { startProxy } = require('./helpers/proxy.js')

const DRIVERS = [
  ['mongoose 9 driver', require('mongoose').mongo],
  ['mongoose 8 driver', require('mongoose8').mongo]
]

let server
beforeAll(async () => {
  server = await startServer({ name: 'txnhold' })
}, 120_000)
afterAll(async () => {
  await server?.destroy()
})

describe.each(DRIVERS)('marks held until the transaction ends (%s)', (label, driver) => {
  let client
  beforeAll(async () => {
    client = new driver.MongoClient(server.uri)
    await client.connect()
  })
  afterAll(async () => {
    await client?.close()
  })

  /** Holds a mark named `name` on `session`; returns whether it was held. */
  function hold (session, sent, name) {
    return holdUntilTransactionEnds(session, () => sent.push(name))
  }

  it('outside a transaction nothing is held', async () => {
    const session = client.startSession()
    const sent = []
    expect(inTransaction(session)).toBe(false)
    expect(hold(session, sent, 'a')).toBe(false)
    expect(hold(undefined, sent, 'b')).toBe(false)
    await session.endSession()
    expect(sent).toEqual([])
  })

  it('commitTransaction sends them once, before its caller resumes', async () => {
    const session = client.startSession()
    const sent = []
    session.startTransaction()
    expect(hold(session, sent, 'a')).toBe(true)
    expect(hold(session, sent, 'b')).toBe(true)
    expect(sent).toEqual([])
    const order = []
    const commit = session.commitTransaction()
    commit.then(() => order.push([...sent]))
    await commit
    expect(order).toEqual([['a', 'b']])
    // A second transaction on the same session holds again; the first's marks are not resent.
    session.startTransaction()
    expect(hold(session, sent, 'c')).toBe(true)
    await session.commitTransaction()
    await session.endSession()
    expect(sent).toEqual(['a', 'b', 'c'])
  })

  it('abortTransaction sends them (re-reads of the unchanged state release the held intents)', async () => {
    const session = client.startSession()
    const sent = []
    session.startTransaction()
    hold(session, sent, 'a')
    await session.abortTransaction()
    expect(sent).toEqual(['a'])
    await session.endSession()
    expect(sent).toEqual(['a'])
  })

  it('endSession with the transaction still open sends them', async () => {
    const session = client.startSession()
    const sent = []
    session.startTransaction()
    hold(session, sent, 'a')
    await session.endSession()
    expect(sent).toEqual(['a'])
  })

  it('withTransaction: an aborted attempt sends its marks at its abort, the committed one after the commit', async () => {
    const session = client.startSession()
    const sent = []
    let attempts = 0
    await session.withTransaction(async () => {
      attempts++
      hold(session, sent, `attempt ${attempts}`)
      expect(sent).toEqual(attempts === 1 ? [] : ['attempt 1'])
      if (attempts === 1) {
        const err = new driver.MongoError('forced transient failure')
        err.addErrorLabel('TransientTransactionError')
        throw err
      }
    })
    expect(attempts).toBe(2)
    expect(sent).toEqual(['attempt 1', 'attempt 2'])
    await session.endSession()
    expect(sent).toEqual(['attempt 1', 'attempt 2'])
  })

  it('a commit that fails (link cut) sends them and keeps them for the session\'s next end', async () => {
    const proxy = await startProxy({ target: { host: '127.0.0.1', port: server.port } })
    const cut = new driver.MongoClient(proxy.uri(server.uri), { serverSelectionTimeoutMS: 1000, connectTimeoutMS: 1000 })
    try {
      await cut.connect()
      const session = cut.startSession()
      const sent = []
      session.startTransaction()
      // A command in the transaction, so the commit has to reach the server (this test bed may
      // refuse the write itself: the commit is still sent).
      await cut.db('txnhold').collection('c').insertOne({ n: 1 }, { session }).catch(() => {})
      hold(session, sent, 'a')
      proxy.setMode('reset')
      await expect(session.commitTransaction()).rejects.toThrow()
      expect(sent).toEqual(['a'])
      proxy.setMode('pass')
      // The retry of the commit (what withTransaction does after an unknown commit result).
      const retried = await session.commitTransaction().then(() => true, () => false)
      expect(sent).toEqual(['a', 'a'])
      await session.endSession()
      // Sent once more at the end only when the retried commit failed too.
      expect(sent).toEqual(retried ? ['a', 'a'] : ['a', 'a', 'a'])
    } finally {
      await cut.close().catch(() => {})
      await proxy.close()
    }
  })

  it('each session keeps its own marks', async () => {
    const one = client.startSession()
    const two = client.startSession()
    const sent = []
    one.startTransaction()
    two.startTransaction()
    hold(one, sent, 'one')
    hold(two, sent, 'two')
    await two.commitTransaction()
    expect(sent).toEqual(['two'])
    await one.commitTransaction()
    expect(sent).toEqual(['two', 'one'])
    await Promise.all([one.endSession(), two.endSession()])
  })
})
