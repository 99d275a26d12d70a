'use strict'
// Test-bed servers for the bench: a fresh local + "Atlas" pair per scenario, driver clients,
// and the FerretDB `_id` index repair (see fixIdIndex).

const fs = require('node:fs')
const path = require('node:path')
const { MongoClient } = require('mongodb')
const testbed = require('../../scripts/testbed.js')
const { repairIdIndex, idIndexRepairAvailable } = require('../../scripts/testbed-idindex.js')

let indexFix = process.env.BENCH_NO_ID_INDEX_FIX !== '1'

/** Turns the FerretDB `_id` index repair on or off (run.js `--no-index-fix`). */
function setIndexFix (on) { indexFix = Boolean(on) }

/** True when collections get the extra SQLite index (FerretDB, sqlite3 CLI present, not disabled). */
function indexFixActive () {
  return indexFix && idIndexRepairAvailable()
}

/**
 * The FerretDB `_id` index repair (scripts/testbed-idindex.js), unless disabled. The collection
 * must exist.
 * @param {{dataDir: string}} server
 * @param {string} db
 * @param {string} coll
 */
function fixIdIndex (server, db, coll) {
  if (!indexFixActive()) return false
  return repairIdIndex(server, db, coll)
}

/**
 * Creates (if needed) a collection on a server and applies fixIdIndex to it.
 * @param {{uri: string, dataDir: string}} server
 * @param {MongoClient} client a client connected to that server
 */
async function prepareCollection (server, client, db, coll) {
  try {
    await client.db(db).createCollection(coll)
  } catch (e) {
    if (e.codeName !== 'NamespaceExists' && e.code !== 48) throw e
  }
  fixIdIndex(server, db, coll)
}

/** Drops a collection (absent is fine), recreates it and repairs its `_id` index. */
async function resetCollection (server, client, db, coll) {
  await client.db(db).collection(coll).drop().catch((e) => {
    if (e.codeName !== 'NamespaceNotFound' && e.code !== 26) throw e
  })
  await prepareCollection(server, client, db, coll)
}

/** @returns {Promise<MongoClient>} a connected driver client */
async function connect (uri, opts = {}) {
  const c = new MongoClient(uri, { serverSelectionTimeoutMS: 10000, ...opts })
  await c.connect()
  return c
}

let serverDisk = process.env.BENCH_SERVER_DISK === '1'
/** Server data on disk instead of tmpfs (run.js `--server-disk`). */
function setServerDisk (on) { serverDisk = Boolean(on) }

/**
 * Where server data dirs go. tmpfs by default: FerretDB/SQLite (WAL, synchronous=FULL) fsyncs
 * every write statement, which caps any pipeline at ~900 writes/s on this machine's disk and
 * would make the drain numbers a measure of fsync latency. MongoDB/Atlas group-commits its
 * journal instead. The product's own journal always stays on disk (bench/results/tmp).
 */
function serverBase () {
  if (serverDisk || testbed.useMongod()) return null
  try {
    fs.accessSync('/dev/shm', fs.constants.W_OK)
    return '/dev/shm'
  } catch {
    return null
  }
}

/** Removes server dirs left in `base` by bench processes that were killed (named with their pid). */
function sweepStale (base) {
  for (const name of fs.readdirSync(base)) {
    const m = /^dualsync-bench-(\d+)-/.exec(name)
    if (!m || Number(m[1]) === process.pid) continue
    try {
      process.kill(Number(m[1]), 0)
    } catch (e) {
      if (e.code === 'ESRCH') fs.rmSync(path.join(base, name), { recursive: true, force: true })
    }
  }
}

/**
 * Starts a fresh local + "Atlas" pair; pair.stop() stops both and removes their data.
 * @returns {Promise<{local: object, atlas: object, stop(): Promise<void>, dataOn: string}>}
 */
async function startPair () {
  const base = serverBase()
  if (base) sweepStale(base)
  const dirs = base ? ['local', 'atlas'].map((n) => fs.mkdtempSync(path.join(base, `dualsync-bench-${process.pid}-${n}-`))) : [undefined, undefined]
  const started = await Promise.allSettled([
    testbed.startServer({ name: 'local', dataDir: dirs[0] }),
    testbed.startServer({ name: 'atlas', dataDir: dirs[1] })
  ])
  const removeDirs = () => { for (const d of dirs) if (d) fs.rmSync(d, { recursive: true, force: true }) }
  const bad = started.find((r) => r.status === 'rejected')
  if (bad) {
    await Promise.all(started.filter((r) => r.status === 'fulfilled').map((r) => r.value.destroy()))
    removeDirs()
    throw bad.reason
  }
  const [local, atlas] = started.map((r) => r.value)
  return {
    local,
    atlas,
    dataOn: base ? `tmpfs (${base})` : 'disk',
    stop: async () => {
      await Promise.all([local.destroy(), atlas.destroy()])
      removeDirs()
    }
  }
}

module.exports = { startPair, setServerDisk, serverBase, connect, fixIdIndex, prepareCollection, resetCollection, setIndexFix, indexFixActive }
