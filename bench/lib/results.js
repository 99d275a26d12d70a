'use strict'
// Result files: bench/results/<engine>/<scenario>.json for full runs, bench/results/<engine>/smoke/
// for --smoke (engine: the test bed, DUALSYNC_TESTBED).

const fs = require('node:fs')
const path = require('node:path')
const { ROOT } = require('./env')

const RESULTS = path.join(ROOT, 'bench', 'results')

/**
 * Directory results of this kind of run go to.
 * @param {boolean} smoke
 * @param {string} [engine] test-bed engine (default: this process's DUALSYNC_TESTBED, else ferretdb)
 */
function resultsDir (smoke, engine = process.env.DUALSYNC_TESTBED || 'ferretdb') {
  const base = path.join(RESULTS, engine)
  return smoke ? path.join(base, 'smoke') : base
}

/** Writes one scenario's result (atomically, so a crash never leaves half a file). */
function writeResult (dir, name, data) {
  fs.mkdirSync(dir, { recursive: true })
  const file = path.join(dir, `${name}.json`)
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, `${JSON.stringify(data, null, 2)}\n`)
  fs.renameSync(tmp, file)
  return file
}

/** Reads every scenario result in a directory, keyed by scenario name. */
function readResults (dir, names) {
  const out = {}
  for (const name of names) {
    const file = path.join(dir, `${name}.json`)
    if (!fs.existsSync(file)) continue
    try {
      out[name] = JSON.parse(fs.readFileSync(file, 'utf8'))
    } catch (e) {
      process.stderr.write(`[bench] ignoring unreadable ${file}: ${e.message}\n`)
    }
  }
  return out
}

module.exports = { RESULTS, resultsDir, writeResult, readResults }
