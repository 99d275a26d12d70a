// An engine with the admin API on, between fresh databases of the shared server pair, and a
// driver client on each side: the set-up of the router, Prometheus and dashboard tests.
// ESM like the other helpers vitest transforms; CJS modules come via createRequire.
import { createRequire } from 'node:module'
import { useServers, uniqueDbName } from './servers.js'

const require = createRequire(import.meta.url)
const { MongoClient } = require('mongodb')
const { createSync } = require('../../index.js')
const { adminSyncOptions } = require('./admin.js')

/**
 * @param {string} prefix  names the test's database (uniqueDbName)
 * @param {string} token   the admin token the engine is given
 * @param {object} [extra] createSync options over adminSyncOptions'
 * @returns {Promise<{servers: object, dbName: string, local: any, atlas: any, sync: any}>}
 */
export async function openAdminSync (prefix, token, extra = {}) {
  delete process.env.SYNC_ADMIN_TOKEN // the token under test is the option's, never the environment's
  const servers = await useServers()
  const dbName = uniqueDbName(prefix)
  const local = new MongoClient(servers.local.uri)
  const atlas = new MongoClient(servers.atlas.uri)
  const sync = await createSync(adminSyncOptions(servers, dbName, token, extra))
  return { servers, dbName, local, atlas, sync }
}
