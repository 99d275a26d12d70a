// ENOSPC: the journal lives on a small tmpfs that fills up. Acknowledged
// segments are given up first (the next mark still fits); once nothing is left
// to give up, marks are lost — never silently: they are counted, health is
// degraded with the reason, and their collection is reconciled as soon as
// space returns, which repairs Atlas.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'

const require = createRequire(import.meta.url)
const { MongoClient, ObjectId } = require('mongodb')
const { createSync } = require('../index.js')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { waitFor } = require('./helpers/wait.js')

let servers, client, sync, dbName, mountDir
let mountError = null
const logs = []
const logger = Object.fromEntries(['debug', 'info', 'warn', 'error'].map((l) => [l, (m) => logs.push(`${l} ${m}`)]))

beforeAll(async () => {
  mountDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-enospc-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mountDir], { stdio: 'pipe' })
  } catch (e) {
    mountError = `${e.message} ${e.stderr || ''}`.trim()
    return
  }
  servers = await useServers()
  dbName = uniqueDbName('enospc')
  client = new MongoClient(servers.local.uri)
  sync = await createSync({
    enabled: true,
    localUri: `${servers.local.uri}/${dbName}`,
    atlasUri: `${servers.atlas.uri}/${dbName}`,
    dataDir: path.join(mountDir, 'sync'),
    workerInterval: 0,
    logLevel: 'info',
    logger
  })
})

afterAll(async () => {
  await sync?.close({ drainTimeoutMs: 0 })
  await client?.close()
  if (!mountError) execFileSync('umount', [mountDir])
  fs.rmSync(mountDir, { recursive: true, force: true })
})

/** Writes `file` until the tmpfs is full. */
function fillDisk (file) {
  const fd = fs.openSync(file, 'w')
  try {
    for (;;) fs.writeSync(fd, Buffer.alloc(4096, 1))
  } catch (e) {
    expect(e.code).toBe('ENOSPC')
  } finally {
    fs.closeSync(fd)
  }
}

describe('journal on a full disk', () => {
  it('frees acknowledged segments first, counts and reports lost marks, and reconciles them once space returns', async (ctx) => {
    if (mountError) {
      console.warn(`\n!!! SKIPPED the ENOSPC test: cannot mount a tmpfs (${mountError}). Run as root to cover the full-disk path. !!!\n`)
      ctx.skip()
    }
    const coll = client.db(dbName).collection('bills')
    const write = async (i) => {
      const _id = new ObjectId()
      await coll.insertOne({ _id, i, note: 'x'.repeat(50) })
      return _id
    }
    for (let i = 0; i < 300; i++) sync.enqueue({ collection: 'bills', id: await write(i) })
    expect(await sync.flush({ timeoutMs: 60000 })).toBe(true)
    await waitFor('everything acknowledged', () => {
      const j = sync.metrics().journal
      return j.checkpoint === j.end
    })
    const acked = sync.metrics().journal.bytes
    expect(acked).toBeGreaterThan(0)

    // The disk fills up (the journal's last page may still have room).
    const filler = path.join(mountDir, 'filler')
    fillDisk(filler)

    // Marks keep fitting (none throws) while everything before them is acknowledged: once
    // the last page's room is used, the acknowledged segment is deleted to make room.
    const reclaimedLine = () => logs.some((l) => /disk full .* deleted \d+ bytes of acknowledged segments/.test(l))
    for (let i = 1000; i < 1200 && !reclaimedLine(); i++) {
      sync.enqueue({ collection: 'bills', id: await write(i) })
      expect(await sync.flush({ timeoutMs: 60000 })).toBe(true)
      await waitFor('everything acknowledged', () => {
        const j = sync.metrics().journal
        return j.checkpoint === j.end
      })
    }
    expect(reclaimedLine()).toBe(true)
    expect(sync.metrics().journal.bytes).toBeLessThan(acked)

    // Nothing gets acknowledged from here on.
    sync.pause()
    // Then the freed room runs out: marks are lost, never silently.
    let lost = 0
    for (let i = 3000; lost < 20 && i < 200000; i++) {
      const id = await write(i)
      try {
        sync.enqueue({ collection: 'bills', id })
      } catch (e) {
        expect(e.message).toMatch(/journal/)
        lost++
      }
    }
    expect(lost).toBe(20)
    const m = sync.metrics()
    expect(m.lostMarks.count).toBe(20)
    expect(m.lostMarks.reconcilePending).toEqual([`${dbName}.bills`])
    expect(m.lostMarks.lastError).toMatch(/No space left|ENOSPC|space/i)
    const h = sync.health()
    expect(h.status).toBe('degraded')
    expect(h.reasons.join('\n')).toMatch(/20 mark\(s\) could not be journaled .*reconcile of .*bills/)
    expect(logs.some((l) => /^error .*could not be journaled/.test(l))).toBe(true)

    // Space returns: the reconcile is queued by itself and repairs Atlas.
    fs.rmSync(filler)
    sync.resume()
    await waitFor('the reconcile reminder to be journaled', () => sync.metrics().lostMarks.reconcilePending.length === 0)
    expect(await sync.flush({ timeoutMs: 120000 })).toBe(true)
    assertConverged(await compareDatabases(servers.local.uri, servers.atlas.uri, dbName))
    expect(sync.health().reasons.join('\n')).not.toMatch(/could not be journaled/)
    expect(sync.metrics().lostMarks.count).toBe(20)
  }, 300_000)

  it('a clean close while the journal still refuses: the lost reconcile reminder is logged with its collections and count, and health says so', async (ctx) => {
    if (mountError) ctx.skip()
    const closeLogs = []
    const closeLogger = Object.fromEntries(['debug', 'info', 'warn', 'error'].map((l) => [l, (m) => closeLogs.push(`${l} ${m}`)]))
    const s2 = await createSync({
      enabled: true,
      localUri: `${servers.local.uri}/${dbName}`,
      atlasUri: `${servers.atlas.uri}/${dbName}`,
      dataDir: path.join(mountDir, 'sync-close'),
      workerInterval: 0,
      adoptIntervalMs: 0,
      logLevel: 'info',
      logger: closeLogger
    })
    const filler = path.join(mountDir, 'filler-close')
    try {
      s2.pause()
      fillDisk(filler)
      let lost = 0
      for (let i = 0; lost < 3 && i < 100000; i++) {
        try {
          s2.enqueue({ collection: 'tabs', id: `t${i}` })
        } catch (e) {
          expect(e.code).toBe('ERR_SYNC_IO')
          lost++
        }
      }
      expect(lost).toBe(3)
      expect(s2.metrics().lostMarks.reconcilePending).toEqual([`${dbName}.tabs`])
      // Still full at close: the last attempt fails, and says what is lost.
      await s2.close({ drainTimeoutMs: 0 })
      expect(closeLogs.some((l) => l.startsWith('error reconcile reminder lost at close: 1 collection(s)') &&
        l.includes(`${dbName}.tabs`) && l.includes('3 lost mark(s)'))).toBe(true)
      expect(s2.health().reasons.join('\n')).toMatch(new RegExp(`3 mark\\(s\\) could not be journaled and the reconcile of ${dbName}\\.tabs could not be journaled at close`))
    } finally {
      await s2.close({ drainTimeoutMs: 0 })
      fs.rmSync(filler, { force: true })
    }
  }, 120_000)
})

describe('capture ring on a disk that fills up', () => {
  // A tmpfs of its own: the 1 MiB one above cannot hold the ring at all (the engine then runs
  // without it, every mark by call). Here the ring fits, then the disk fills: writes into the
  // ring's pages must still land (its blocks were written at creation, so no SIGBUS), and the
  // marks the journal can no longer take are counted and their collection reconciled.
  let ringMount = null
  let ringMountError = null
  beforeAll(() => {
    ringMount = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-enospc-ring-'))
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', ringMount], { stdio: 'pipe' })
    } catch (e) {
      ringMountError = `${e.message} ${e.stderr || ''}`.trim()
    }
  })
  afterAll(() => {
    // Lazily: the ring stays mapped until its ArrayBuffer is garbage collected.
    if (!ringMountError) execFileSync('umount', ['-l', ringMount])
    fs.rmSync(ringMount, { recursive: true, force: true })
  })

  it('marks captured through the ring after the disk filled are counted as lost and reconciled, and the process lives', async (ctx) => {
    if (ringMountError) {
      console.warn(`\n!!! SKIPPED the ENOSPC ring test: cannot mount a tmpfs (${ringMountError}). Run as root to cover it. !!!\n`)
      ctx.skip()
    }
    const { encodeOp } = require('../lib/wire.js')
    const s3 = await createSync({
      enabled: true,
      localUri: 'mongodb://127.0.0.1:9/ringfull',
      atlasUri: 'mongodb://127.0.0.1:9/ringfull',
      dataDir: path.join(ringMount, 'sync'),
      connectTimeoutMs: 100,
      adoptIntervalMs: 0,
      logLevel: 'error',
      logger: { debug () {}, info () {}, warn () {}, error () {} }
    })
    const filler = path.join(ringMount, 'filler')
    try {
      const send = (i) => s3._captureEncoded([encodeOp({ collection: 'receipts', id: `r${i}-${'x'.repeat(40)}` }, 'ringfull')])
      send(0) // by call: learns the namespace
      expect(s3._ring).not.toBe(null)
      fillDisk(filler)
      const before = s3._ring.written
      // Enough to overflow the journal's last page many times over.
      for (let i = 1; i <= 2000; i++) send(i)
      expect(s3._ring.written - before).toBeGreaterThan(1000)
      const m = s3.metrics() // takes what the ring holds
      expect(m.lostMarks.count).toBeGreaterThan(0)
      expect(m.lostMarks.reconcilePending).toEqual(['ringfull.receipts'])
      expect(m.journal.corruptRecords).toBe(0)
    } finally {
      await s3.close({ drainTimeoutMs: 0 })
      fs.rmSync(filler, { force: true })
    }
  }, 60_000)
})
