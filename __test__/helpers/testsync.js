// Opens a real sync engine between a server pair's databases named `db`, with its own temp data
// dir and the settings tests share (no batching interval, warnings only).
// ESM because vitest loads test helpers through its transform; CJS modules come via createRequire.
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { createSync } = require('../../index.js')

/**
 * @param {{local: {uri: string}, atlas: {uri: string}}} servers a pair from useServers()
 * @param {string} db database name on both sides
 * @param {object} [options] createSync options that override the shared ones (extras policy
 *   `delete`: a pure mirror); `dirPrefix` names the temp data dir
 * @returns {Promise<{sync: any, dataDir: string}>}
 */
export async function openTestSync (servers, db, { dirPrefix = 'dualsync-test-', ...options } = {}) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), dirPrefix))
  const sync = await createSync({
    enabled: true,
    localUri: `${servers.local.uri}/${db}`,
    atlasUri: `${servers.atlas.uri}/${db}`,
    dataDir,
    workerInterval: 0,
    logLevel: 'warn',
    // These tests own their Atlas database (a pure mirror): extras are deleted. The shared-Atlas
    // tests (sharedatlas.test.js) pass their own policy.
    extrasPolicy: 'delete',
    ...options
  })
  return { sync, dataDir }
}
