'use strict'
// Opening the product's sync engine for a scenario: own data dir, quiet logs, bench defaults.

const fs = require('node:fs')
const path = require('node:path')
const { ROOT } = require('./env')

const TMP = path.join(ROOT, 'bench', 'results', 'tmp')
const created = new Set()

/** A fresh directory under bench/results/tmp (git-ignored; on the same disk as a real app's). */
function tempDir (label) {
  fs.mkdirSync(TMP, { recursive: true })
  const dir = fs.mkdtempSync(path.join(TMP, `${label}-`))
  created.add(dir)
  return dir
}

/** Removes every directory tempDir made in this process (journals of closed engines). */
function removeTempDirs () {
  for (const dir of created) fs.rmSync(dir, { recursive: true, force: true })
  created.clear()
}

/**
 * Opens a Sync engine between the pair's servers.
 * @param {{local: {uri: string}, atlas: {uri: string}}} pair
 * @param {object} [opts] createSync options that override the bench defaults
 * @returns {Promise<import('../../index').Sync>}
 */
async function openSync (pair, opts = {}) {
  const { createSync } = require(path.join(ROOT, 'index.js'))
  return createSync({
    enabled: true,
    localUri: `${pair.local.uri}/bench`,
    atlasUri: `${pair.atlas.uri}/bench`,
    dataDir: opts.dataDir || tempDir('journal'),
    logLevel: 'warn',
    ...opts
  })
}

/** Polls `fn` until it returns truthy or the deadline passes; returns the last value. */
async function waitFor (fn, { timeoutMs = 60000, everyMs = 20 } = {}) {
  const until = Date.now() + timeoutMs
  let v = await fn()
  while (!v && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, everyMs))
    v = await fn()
  }
  return v
}

/** Removes a directory made by tempDir. */
function removeDir (dir) {
  fs.rmSync(dir, { recursive: true, force: true })
}

/** The engine counts the app as writing this long after its last mark (read_limit APP_QUIET). */
const APP_QUIET_MS = 250

/**
 * Marks every `_id` of `ids` in `collection` (enqueued 1000 per call), then lets the engine's
 * "the app is writing" window pass: a real backlog comes from the journal, not from enqueue
 * calls, so a timed drain must not start with the drain sharing the server with a writing app
 * (SYNC_DRAIN_SHARE). Untimed set-up, not synchronisation.
 */
async function markAll (sync, collection, ids) {
  for (let i = 0; i < ids.length; i += 1000) sync.enqueue(ids.slice(i, i + 1000).map((id) => ({ collection, id })))
  await new Promise((resolve) => setTimeout(resolve, APP_QUIET_MS + 50))
}

module.exports = { markAll, openSync, tempDir, removeDir, removeTempDirs, waitFor, TMP }
