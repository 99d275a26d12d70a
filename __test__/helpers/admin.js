'use strict'
// Shared set-up of the admin-surface tests (router, Prometheus, dashboard):
// an engine whose URIs carry a password, so every test can check that the
// password never leaks.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const PASSWORD = 'S3cretPass'

// Passwords seen in the servers' URIs (the documentdb test bed's real SCRAM logins).
const serverPasswords = new Set()

/**
 * A URI with a password in it, so every admin test can check the password never leaks. A test-bed
 * URI that already carries a login (documentdb) is used as it is: its password is real. Otherwise
 * (FerretDB accepts PLAIN without checking it) a made-up login is added.
 */
function credUri (base, db) {
  const { password } = new URL(base)
  if (password) {
    serverPasswords.add(decodeURIComponent(password))
    return `${base}/${db}`
  }
  return `${base.replace('mongodb://', `mongodb://dsuser:${PASSWORD}@`)}/${db}?authMechanism=PLAIN&authSource=%24external`
}

/** Every password the admin tests' URIs carried (plain and URI-encoded): none may appear in any output. */
function secrets () {
  return [PASSWORD, ...serverPasswords].flatMap((p) => [p, encodeURIComponent(p)])
}

/**
 * createSync options for an admin test: password URIs, a fresh data dir,
 * the bearer token, and fast retries so a dead letter appears quickly.
 * @param {{local: {uri: string}, atlas: {uri: string}}} servers
 * @param {string} dbName
 * @param {string} token
 * @param {object} [extra] more options (they win)
 */
function adminSyncOptions (servers, dbName, token, extra = {}) {
  return {
    enabled: true,
    localUri: credUri(servers.local.uri, dbName),
    atlasUri: credUri(servers.atlas.uri, dbName),
    dataDir: fs.mkdtempSync(path.join(os.tmpdir(), `dualsync-${dbName.slice(0, 12)}-`)),
    adminToken: token,
    extrasPolicy: 'delete', // a pure mirror: each test owns its Atlas database
    maxRetries: 1,
    backoffMinMs: 10,
    backoffMaxMs: 50,
    ...extra
  }
}

module.exports = { PASSWORD, credUri, secrets, adminSyncOptions }
