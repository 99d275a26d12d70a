// A real sync engine plus a fresh Mongoose instance using its plugin, for end-to-end tests of
// the capture → journal → drain path against a server pair (scripts/testbed.js).
// ESM because vitest loads test helpers through its transform; CJS modules come via createRequire.
import { createRequire } from 'node:module'
import fs from 'node:fs'
import { uniqueDbName } from './servers.js'
import { openTestSync } from './testsync.js'

const require = createRequire(import.meta.url)
const { MongoClient } = require('mongodb')
const { compareDatabases, assertConverged } = require('./compare.js')

/** The two Mongoose majors every end-to-end suite runs on, for `describe.each`. */
export const MONGOOSE_VERSIONS = [
  ['mongoose 9', require('mongoose')],
  ['mongoose 8', require('mongoose8')]
]

/**
 * Starts a sync engine on a fresh database and a Mongoose instance (of `lib`) with its plugin
 * applied before `defineModels` compiles the models.
 * @param {{local: {uri: string}, atlas: {uri: string}}} servers  a pair from useServers()
 * @param {object} opts
 * @param {typeof import('mongoose')} opts.lib  the mongoose module (8 or 9)
 * @param {string} opts.prefix  database name prefix
 * @param {(m: import('mongoose').Mongoose, sync: object) => object} opts.defineModels  returns the models
 *   (gets the sync too, for a schema that must apply `sync.plugin` before its own hooks)
 * @param {object} [opts.syncOptions]  extra createSync options (excludedCollections, queryMarkCap...)
 * @returns {Promise<{lib: any, m: any, models: object, sync: any, db: string, local: any, atlas: any,
 *   flush(): Promise<void>, converge(collections?: string[]): Promise<object[]>,
 *   atlasNames(): Promise<string[]>, close(): Promise<void>}>}
 */
export async function startSyncEnv (servers, { lib, prefix, defineModels, syncOptions = {} }) {
  const db = uniqueDbName(prefix)
  const { sync, dataDir } = await openTestSync(servers, db, {
    dirPrefix: `dualsync-${prefix}-`,
    // FerretDB v1.24 holds one pooled SQLite connection per statement of an `update` command
    // until the command ends: 4 lanes × 100 replace-upserts of existing documents exhaust its
    // pool of 100 and the server hangs (see bench/scenarios/capture.js). MongoDB has no such limit.
    batchSize: 20,
    ...syncOptions
  })
  const m = new lib.Mongoose()
  m.plugin(sync.plugin)
  const models = defineModels(m, sync)
  await m.connect(`${servers.local.uri}/${db}`)
  // Collections and indexes exist before the tests write (autoCreate/autoIndex run in the background).
  await Promise.all(Object.values(models).filter((x) => !x.baseModelName).map((x) => x.init()))
  // compare.js takes clients of its own driver; the tests' own reads use the driver (and BSON
  // classes) of the Mongoose under test, so ObjectIds from its documents serialize.
  const local = new MongoClient(servers.local.uri)
  const atlas = new MongoClient(servers.atlas.uri)
  const appLocal = new lib.mongo.MongoClient(servers.local.uri)
  const appAtlas = new lib.mongo.MongoClient(servers.atlas.uri)
  await Promise.all([local, atlas, appLocal, appAtlas].map((c) => c.connect()))
  const excluded = new Set(syncOptions.excludedCollections || [])

  const env = {
    lib,
    m,
    models,
    sync,
    db,
    dataDir,
    /** The test's own driver handles on the two databases (writes here are never captured). */
    local: appLocal.db(db),
    atlas: appAtlas.db(db),

    /** Waits until every captured write is on Atlas; fails the test if it is not within the deadline. */
    async flush (timeoutMs = 60_000) {
      const done = await sync.flush({ timeoutMs })
      if (done !== true) throw new Error(`sync.flush() did not drain within ${timeoutMs} ms: ${JSON.stringify(sync.metrics())}`)
    },

    /**
     * Flushes, then asserts that every synced collection (all but the excluded ones, on either
     * side) holds the same documents, byte for byte, on both servers.
     * @returns {Promise<object[]>} the comparison, for extra checks
     */
    async converge (collections) {
      await env.flush()
      let names = collections
      if (!names) {
        const [l, a] = await Promise.all([env.local, env.atlas].map((d) => d.listCollections({}, { nameOnly: true }).toArray()))
        names = [...new Set([...l, ...a].map((c) => c.name))].filter((n) => !n.startsWith('system.') && !excluded.has(n)).sort()
      }
      const result = await compareDatabases(local, atlas, db, names)
      assertConverged(result)
      return result
    },

    /** Collection names on the Atlas side. */
    async atlasNames () {
      return (await env.atlas.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name)
    },

    async close () {
      await m.disconnect()
      await sync.close()
      await Promise.all([local, atlas, appLocal, appAtlas].map((c) => c.close()))
      fs.rmSync(dataDir, { recursive: true, force: true })
    }
  }
  return env
}
