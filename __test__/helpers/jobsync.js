// Sync engines for the reconcile tests (one per database, each with its own temp data dir), and
// `_id` keys that let a job report's samples be compared with the driver's values.
// ESM because vitest loads test helpers through its transform; CJS modules come via createRequire.
import { createRequire } from 'node:module'
import fs from 'node:fs'
import { openTestSync } from './testsync.js'

const require = createRequire(import.meta.url)
const { BSON } = require('mongodb')

/**
 * Opens engines and closes them all at once (call `closeAll` in afterEach/afterAll).
 * @param {{local: {uri: string}, atlas: {uri: string}}} servers a pair from useServers()
 * @returns {{open(db: string, extra?: object): Promise<any>, closeAll(): Promise<void>}}
 */
export function syncFactory (servers) {
  const opened = []
  return {
    async open (db, extra = {}) {
      const { sync, dataDir } = await openTestSync(servers, db, { dirPrefix: 'dualsync-reconcile-', ...extra })
      opened.push({ sync, dataDir })
      return sync
    },
    async closeAll () {
      for (const { sync, dataDir } of opened.splice(0)) {
        await sync.close({ drainTimeoutMs: 0 })
        fs.rmSync(dataDir, { recursive: true, force: true })
      }
    }
  }
}

/**
 * Type-aware key of an `_id`, equal for a driver value and the same `_id` as a job report
 * lists it (reports carry extended JSON: ObjectId as {$oid}, strings and int32 as themselves).
 * @param {any} id
 * @returns {string}
 */
export function idKey (id) {
  const isEjson = id !== null && typeof id === 'object' && !id._bsontype && !(id instanceof Date)
  const value = isEjson ? BSON.EJSON.deserialize({ v: id }, { relaxed: true }).v : id
  return BSON.EJSON.stringify({ v: value }, { relaxed: true })
}

/**
 * Sorted keys of a list of `_id`s (driver values or report samples).
 * @param {any[]} ids
 * @returns {string[]}
 */
export function idKeys (ids) {
  return ids.map(idKey).sort()
}

/**
 * One line on where the drain stands, for the message of a failed flush expectation.
 * @param {any} sync
 * @returns {string}
 */
export function drainState (sync) {
  const m = sync.metrics()
  return `drain not finished: backlog ${m.backlog.total} (in flight ${m.backlog.inFlight}), applied ${m.applied.total}, ` +
    `retries ${m.retries}, transient failures ${m.failures.transient}, last Atlas error: ${m.atlas.lastError}`
}
