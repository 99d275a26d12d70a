// A capture whose mark cannot be taken (here: an `_id` that cannot identify a document) is
// never silent: counted, logged, in health, and its collection queued for a reconcile — also
// when the collection's name happens to contain "journal" (the repair used to be skipped by
// matching the error message instead of its code).
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { useServers, uniqueDbName } from './helpers/servers.js'
import { openTestSync } from './helpers/testsync.js'

const require = createRequire(import.meta.url)
const mongoose = require('mongoose')

let servers, dbName, conn

beforeAll(async () => {
  servers = await useServers()
  dbName = uniqueDbName('hookerr')
  conn = await mongoose.createConnection(`${servers.local.uri}/${dbName}`).asPromise()
})

afterAll(async () => {
  await conn?.close()
})

describe('capture failures', () => {
  it('a mark that cannot be encoded queues a reconcile of its collection, whatever the collection is called', async () => {
    const logs = []
    const logger = Object.fromEntries(['debug', 'info', 'warn', 'error'].map((l) => [l, (m) => logs.push(`${l} ${m}`)]))
    const { sync } = await openTestSync(servers, dbName, { dirPrefix: 'dualsync-hookerr-', logger })
    try {
      sync.pause() // the reconcile stays in the backlog where the test can see it
      const schema = new mongoose.Schema({ _id: mongoose.Schema.Types.Mixed, n: Number })
      schema.plugin(sync.plugin)
      const Entry = conn.model('Entry', schema, 'journal_entries')
      const before = sync.metrics().backlog.total
      // NaN names no document: the mark is refused; whatever the server does with the write.
      await Entry.create({ _id: NaN, n: 1 }).catch(() => {})
      expect(sync.metrics().hookErrors).toBeGreaterThan(0)
      expect(logs.some((l) => /^error capture failed .*is NaN/.test(l))).toBe(true)
      expect(logs.some((l) => /^warn reconcile of collection journal_entries queued/.test(l))).toBe(true)
      expect(sync.metrics().backlog.total).toBeGreaterThan(before)
      expect(sync.health().status).not.toBe('healthy')
    } finally {
      await sync.close({ drainTimeoutMs: 0 })
    }
  })
})
