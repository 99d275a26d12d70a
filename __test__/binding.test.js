// The native binding's contract with the JS layer, without servers (an engine
// opens offline): the op-kind table lib/wire.js copies is the binding's, and
// errors cross the boundary with a real `code` (no parsing of message text).
import { describe, it, expect, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)
const native = require('../native.js')
const { K } = require('../lib/wire.js')
const { createSync } = require('../index.js')

const dirs = []
afterAll(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }) })

function nativeConfig (extra = {}) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-binding-'))
  dirs.push(dataDir)
  return {
    localUri: 'mongodb://127.0.0.1:1/binding',
    atlasUri: 'mongodb://127.0.0.1:1/binding',
    localDb: 'binding',
    atlasDb: 'binding',
    dataDir,
    persistQueue: true,
    fsyncIntervalMs: 1000,
    queueMaxSize: 100,
    batchSize: 10,
    workerIntervalMs: 0,
    concurrency: 1,
    maxRetries: 1,
    excludedCollections: [],
    backoffMinMs: 10,
    backoffMaxMs: 50,
    connectTimeoutMs: 200,
    logLevel: 'error',
    ...extra
  }
}

const codeOf = (fn) => {
  try {
    fn()
  } catch (e) {
    return e.code
  }
  return 'no error'
}

describe('native binding', () => {
  it("lib/wire.js's op kinds are the binding's table", () => {
    expect({ ...K }).toEqual(native.opKinds())
  })

  it('errors carry the engine code: invalid input, a locked journal, a closed engine', async () => {
    expect(codeOf(() => new native.NativeEngine(nativeConfig({ logLevel: 'loud' }), () => {}))).toBe('ERR_SYNC_INVALID')
    const cfg = nativeConfig()
    const engine = new native.NativeEngine(cfg, () => {})
    try {
      expect(codeOf(() => new native.NativeEngine({ ...cfg }, () => {}))).toBe('ERR_SYNC_LOCKED') // lib/open.js waits on this code
      expect(codeOf(() => engine.enqueue([{ c: 'x', d: 'binding', k: K.OBJECT_ID, v: 'not-hex' }]))).toBe('ERR_SYNC_INVALID')
      expect(codeOf(() => engine.jobSnapshot('nope'))).toBe('ERR_SYNC_INVALID')
      // Two marks as arguments: both journaled, or (one invalid) neither, naming the bad one.
      expect(engine.enqueueTwo('x', 'binding', K.STRING, 'a', undefined, 'y', 'binding', K.INT32, 7, true)).toBe(2)
      let bad = null
      try { engine.enqueueTwo('x', 'binding', K.STRING, 'b', undefined, 'y', 'binding', K.OBJECT_ID, 'not-hex', true) } catch (e) { bad = e }
      expect(bad && bad.code).toBe('ERR_SYNC_INVALID')
      expect(bad.message).toMatch(/op 1 .*not-hex/)
      expect(engine.metrics().enqueued).toBe(2)
      const closed = await engine.close(0)
      expect(typeof closed.drained).toBe('boolean')
      expect(closed.lostMarks).toEqual({ count: 0, reconcilePending: [], lastError: null })
    } finally {
      await engine.close(0)
    }
    expect(codeOf(() => engine.metrics())).toBe('ERR_SYNC_CLOSED')
    expect(codeOf(() => engine.enqueueOne('x', 'binding', K.STRING, 'a'))).toBe('ERR_SYNC_CLOSED')
    expect(codeOf(() => engine.pause())).toBe('ERR_SYNC_CLOSED')
    // Promises can only reject with a napi Status: the documented mapping (src/lib.rs to_status).
    await expect(engine.flush(10)).rejects.toMatchObject({ code: 'Cancelled' })
  })

  it('captureRing(): the mapping itself (header and 1 MiB of data), null when off, ERR_SYNC_CLOSED after close', async () => {
    const engine = new native.NativeEngine(nativeConfig(), () => {})
    const buffer = engine.captureRing()
    expect(buffer).toBeInstanceOf(ArrayBuffer)
    const bytes = Buffer.from(buffer)
    expect(bytes.toString('latin1', 0, 8)).toBe('DSRING1\0')
    expect(bytes.readUInt32LE(8)).toBe(1 << 20)
    expect(buffer.byteLength).toBe(bytes.readUInt32LE(12) + (1 << 20))
    // Shared, not a copy: a mark written here is one the engine journals.
    const ring = new (require('../lib/ring.js').CaptureRing)(buffer)
    ring.learn([{ c: 'x', d: 'binding' }])
    expect(ring.write([{ c: 'x', d: 'binding', k: K.STRING, v: 'through-the-ring' }])).toBe(true)
    expect(engine.metrics().enqueued).toBe(1)
    await engine.close(0)
    expect(codeOf(() => engine.captureRing())).toBe('ERR_SYNC_CLOSED')
    for (const extra of [{ captureRing: false }, { fsyncIntervalMs: 0 }]) {
      const off = new native.NativeEngine(nativeConfig(extra), () => {})
      try {
        expect(off.captureRing()).toBe(null)
      } finally {
        await off.close(0)
      }
    }
  })

  it('the Sync maps them: TypeError for invalid input, ERR_SYNC_CLOSED after close', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-binding-sync-'))
    dirs.push(dataDir)
    const sync = await createSync({
      enabled: true,
      localUri: 'mongodb://127.0.0.1:1/binding',
      atlasUri: 'mongodb://127.0.0.1:1/binding',
      dataDir,
      connectTimeoutMs: 200,
      logger: { debug () {}, info () {}, warn () {}, error () {} }
    })
    let err = null
    try { sync.enqueue({ collection: 'x', id: 7n ** 40n }) } catch (e) { err = e }
    expect(err).toBeInstanceOf(TypeError)
    expect(err.code).toBe('ERR_SYNC_INVALID')
    await sync.close({ drainTimeoutMs: 0 })
    let closed = null
    try { sync.metrics() } catch (e) { closed = e }
    expect(closed && closed.code).toBe('ERR_SYNC_CLOSED')
    await expect(sync.flush({ timeoutMs: 10 })).rejects.toMatchObject({ code: 'ERR_SYNC_CLOSED' })
  })
})
