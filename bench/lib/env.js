'use strict'
// What the numbers were measured on: machine, runtime, code version, server.

const fs = require('node:fs')
const os = require('node:os')
const { execFileSync } = require('node:child_process')
const path = require('node:path')

const ROOT = path.resolve(__dirname, '..', '..')

function git (args) {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return null
  }
}

/** mtime of the native addon the run loaded (the lead rebuilds it as the core changes) */
function addonBuilt () {
  try {
    const f = fs.readdirSync(ROOT).find((n) => n.endsWith('.node'))
    return f ? fs.statSync(path.join(ROOT, f)).mtime.toISOString() : null
  } catch {
    return null
  }
}

/** The test bed's servers, in words (results name what they were measured on). */
function serverName (testbed) {
  const kind = testbed.engine()
  if (kind === 'mongod') return 'mongod'
  if (kind === 'documentdb') return 'PostgreSQL 15 + DocumentDB (pg_documentdb + its gateway), loopback'
  return `FerretDB ${testbed.FERRETDB_VERSION} (SQLite backend), loopback`
}

/** @returns {object} a description of the machine and code the run used */
function environment () {
  const cpus = os.cpus()
  let mongoose = null
  let driver = null
  try { mongoose = require('mongoose/package.json').version } catch { /* not installed */ }
  try { driver = require('mongodb/package.json').version } catch { /* not installed */ }
  const testbed = require(path.join(ROOT, 'scripts', 'testbed.js'))
  return {
    date: new Date().toISOString(),
    machine: {
      platform: `${os.platform()} ${os.release()}`,
      arch: os.arch(),
      cpu: cpus.length ? cpus[0].model : 'unknown',
      cores: cpus.length,
      memoryGiB: Math.round(os.totalmem() / 2 ** 30)
    },
    node: process.version,
    mongoose,
    mongodbDriver: driver,
    engine: testbed.engine(),
    server: serverName(testbed),
    commit: git(['rev-parse', '--short', 'HEAD']),
    // the bench's own outputs are tracked files it rewrites: they do not make the code dirty
    dirty: Boolean(git(['status', '--porcelain', '--untracked-files=no', '--', '.', ':!bench/results', ':!docs/PERFORMANCE.md'])),
    addonBuilt: addonBuilt()
  }
}

module.exports = { environment, ROOT }
