'use strict'
// The JS side of the capture ring (crates/core/src/ring): marks written into a file the engine
// maps shared, with no native call and no syscall. A write to those pages is in the kernel's page
// cache at once, so it survives the process being killed like the journal's own write does; the
// engine moves the marks into the journal within milliseconds, or replays them at the next open.
// The layout (offsets in the header, record format in record.rs) is the engine's; the magic
// versions it, and a ring this code does not know is not used.

const MAGIC = 'DSRING1\0'
const RECORD_HEADER = 16
const WRAP_BIT = 0x80000000
const FLAG_INTENT = 1
const MAX_FIELD = 0xffff
const FNV_OFFSET = 0x811c9dc5
const FNV_PRIME = 0x01000193
const OBJECT_ID = 0
const COLLECTION = 9

/** Kinds whose value is a number (8 bytes); 9: a collection (no value); 5: BSON bytes; the rest strings (lib/wire.js). */
function isNumberKind (k) {
  return k === 2 || k === 3 || k === 6
}

class CaptureRing {
  /**
   * @param {ArrayBuffer} buffer  the engine's ring (NativeEngine.captureRing())
   * @throws {Error} with code ERR_SYNC_RING when the buffer is not a ring this code writes
   */
  constructor (buffer) {
    const bytes = Buffer.from(buffer)
    if (bytes.length < 256 || bytes.toString('latin1', 0, 8) !== MAGIC) {
      const err = new Error('capture ring: unknown layout (the addon and lib/ring.js disagree)')
      err.code = 'ERR_SYNC_RING'
      throw err
    }
    this._bytes = bytes
    this._view = new DataView(buffer)
    this._i32 = new Int32Array(buffer)
    this._cap = bytes.readUInt32LE(8)
    this._data = bytes.readUInt32LE(12)
    this._headAt = bytes.readUInt32LE(16) / 4
    this._tailAt = bytes.readUInt32LE(20) / 4
    this._head = Atomics.load(this._i32, this._headAt) >>> 0
    // db → collection → their bytes: names the engine accepted (by call) before.
    /** @type {Map<string, Map<string, {bytes: Buffer, dbLength: number}>>} */
    this._names = new Map()
    // The namespace of the last record written: a run of marks usually has one.
    this._lastDb = null
    this._lastColl = null
    this._lastNames = null
    /** Marks written so far (tests and the capture bench read it). */
    this.written = 0
  }

  /** Bytes written that the engine has not taken yet. */
  pending () {
    return (this._head - (Atomics.load(this._i32, this._tailAt) >>> 0)) >>> 0
  }

  /**
   * Lets later marks of these ops' namespaces go through the ring: call after the engine
   * accepted them by call (so it checked the names once).
   * @param {Array<{c: string, d: string}>} encoded
   */
  learn (encoded) {
    for (const e of encoded) {
      let colls = this._names.get(e.d)
      if (!colls) this._names.set(e.d, (colls = new Map()))
      if (colls.has(e.c)) continue
      const bytes = Buffer.from(e.d + e.c, 'utf8')
      const dbLength = Buffer.byteLength(e.d, 'utf8')
      if (dbLength > MAX_FIELD || bytes.length - dbLength > MAX_FIELD) continue
      colls.set(e.c, { bytes, dbLength })
    }
  }

  /**
   * Writes one call's encoded marks and publishes them together. False, with nothing published,
   * when they cannot go this way (a namespace not learnt yet, a value too large, the ring full):
   * the caller sends them by call.
   * @param {Array<{c: string, d: string, k: number, v?: any, i?: true}>} encoded
   * @returns {boolean}
   */
  write (encoded) {
    const cap = this._cap
    const used = (this._head - (Atomics.load(this._i32, this._tailAt) >>> 0)) >>> 0
    let free = cap - used
    let head = this._head
    for (let n = 0; n < encoded.length; n++) {
      const e = encoded[n]
      const names = this._namesOf(e.d, e.c)
      if (names === undefined) return false
      const vl = valueLength(e)
      if (vl < 0) return false
      const body = names.bytes.length + vl
      const len = (RECORD_HEADER + body + 7) & ~7
      const at = head & (cap - 1)
      const room = cap - at
      const need = len > room ? len + room : len
      if (need > free) return false
      let pos = this._data + at
      if (len > room) {
        this._view.setUint32(pos, (WRAP_BIT | room) >>> 0, true)
        head = (head + room) >>> 0
        pos = this._data
      }
      this._record(pos, e, names, vl, len)
      head = (head + len) >>> 0
      free -= need
    }
    this._head = head
    this.written += encoded.length
    // Publishes the bytes above (a release store: the engine reads head, then the records).
    Atomics.store(this._i32, this._headAt, head | 0)
    return true
  }

  /** The learnt bytes of a namespace, or undefined. */
  _namesOf (db, coll) {
    if (db === this._lastDb && coll === this._lastColl) return this._lastNames
    const colls = this._names.get(db)
    const names = colls && colls.get(coll)
    if (names !== undefined) {
      this._lastDb = db
      this._lastColl = coll
      this._lastNames = names
    }
    return names
  }

  // Plain byte loops, not Buffer's copy/write/fill: each of those is a call into C++, which
  // costs more than the few dozen bytes a mark has (this runs inside every app write). The
  // checksum (FNV-1a over the record from byte 8) is taken in the same pass.
  _record (pos, e, names, vl, len) {
    const b = this._bytes
    const view = this._view
    view.setUint32(pos, len, true)
    b[pos + 8] = e.k
    b[pos + 9] = e.i === true ? FLAG_INTENT : 0
    view.setUint16(pos + 10, names.dbLength, true)
    view.setUint16(pos + 12, names.bytes.length - names.dbLength, true)
    view.setUint16(pos + 14, vl, true)
    let h = FNV_OFFSET
    for (let i = pos + 8; i < pos + RECORD_HEADER; i++) h = Math.imul(h ^ b[i], FNV_PRIME)
    let at = pos + RECORD_HEADER
    const nb = names.bytes
    for (let i = 0; i < nb.length; i++) {
      const x = nb[i]
      b[at + i] = x
      h = Math.imul(h ^ x, FNV_PRIME)
    }
    at += nb.length
    const v = e.v
    if (typeof v === 'string' && vl === v.length) {
      // ASCII (an ObjectId's hex, most string ids): one byte per character
      for (let i = 0; i < vl; i++) {
        const x = v.charCodeAt(i)
        b[at + i] = x
        h = Math.imul(h ^ x, FNV_PRIME)
      }
    } else if (vl > 0) {
      if (isNumberKind(e.k)) view.setFloat64(at, v, true)
      else if (typeof v === 'string') b.write(v, at, vl, 'utf8')
      else b.set(v, at)
      for (let i = at; i < at + vl; i++) h = Math.imul(h ^ b[i], FNV_PRIME)
    }
    for (let i = at + vl; i < pos + len; i++) b[i] = 0
    view.setUint32(pos + 4, h >>> 0, true)
  }
}

/** Bytes of an op's value in a record; -1: it cannot go through the ring. */
function valueLength (e) {
  const k = e.k
  if (k === COLLECTION) return 0
  const v = e.v
  if (isNumberKind(k)) return typeof v === 'number' ? 8 : -1
  const n = typeof v === 'string'
    ? (k === OBJECT_ID ? v.length : utf8Length(v))
    : (v instanceof Uint8Array ? v.length : -1)
  return n > MAX_FIELD ? -1 : n
}

/** UTF-8 bytes of a string: its length when it is ASCII (found without a call into C++). */
function utf8Length (s) {
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) > 0x7f) return Buffer.byteLength(s, 'utf8')
  }
  return s.length
}

/**
 * The engine's ring as a writer, or null when marks go by call: the ring is off
 * (SYNC_CAPTURE_RING=false, SYNC_FSYNC_INTERVAL_MS=0), or this runtime cannot share memory with
 * the addon (Electron refuses external buffers).
 * @param {{captureRing: () => ArrayBuffer | null}} engine  the NativeEngine
 * @param {{captureRing: boolean, fsyncIntervalMs: number}} config
 * @param {{info: Function, warn: Function}} logger
 * @returns {CaptureRing | null}
 */
function attachRing (engine, config, logger) {
  if (!config.captureRing || config.fsyncIntervalMs === 0) return null
  try {
    const buffer = engine.captureRing()
    if (buffer) return new CaptureRing(buffer)
    logger.info('capture ring: not shared by this runtime (external buffers refused); each captured write calls the engine')
  } catch (e) {
    logger.warn(`capture ring unusable (${e && e.message ? e.message : String(e)}); each captured write calls the engine`)
  }
  return null
}

module.exports = { CaptureRing, attachRing }
