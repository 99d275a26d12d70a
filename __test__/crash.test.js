// kill -9 torture: a child app writes continuously through Mongoose (mixed
// write paths) and is SIGKILLed at random moments, then restarted on the
// same journal. After the last restart drains, Atlas equals local:
// 0 missing, 0 extra, 0 different. DUALSYNC_CRASH_CYCLES sets the count
// (20 by default for CI; run 200+ locally).
import { describe, it, expect, beforeAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'

const require = createRequire(import.meta.url)
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { startFixture } = require('./helpers/fixture.js')

const CYCLES = Number(process.env.DUALSYNC_CRASH_CYCLES || 20)
const WRITER = path.join(__dirname, 'fixtures', 'writer.js')
let servers, dbName, dataDir

function startWriter (env) {
  return startFixture(WRITER, { LOCAL_URI: `${servers.local.uri}/${dbName}`, ATLAS_URI: `${servers.atlas.uri}/${dbName}`, DATA_DIR: dataDir, ...env })
}

/** Resolves when the writer printed `count` acknowledged writes (or exited). */
function afterWrites (w, count) {
  return new Promise((resolve, reject) => {
    let seen = 0
    w.lines.on('line', (line) => {
      if (line.startsWith('w ') && ++seen >= count) resolve(seen)
    })
    w.exited.then(({ code, stderr }) => reject(new Error(`writer exited early (code ${code}): ${stderr}`)))
  })
}

beforeAll(async () => {
  servers = await useServers()
  dbName = uniqueDbName('crash')
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-crash-'))
})

describe('kill -9 torture', () => {
  it(`loses nothing across ${CYCLES} SIGKILLs`, async () => {
    let totalWrites = 0
    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      const w = startWriter({ SEED: String(cycle * 7919) })
      const target = 5 + Math.floor(Math.random() * 40)
      totalWrites += await afterWrites(w, target)
      // Land the kill at a random point inside the next write or batch.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 15))
      w.child.kill('SIGKILL')
      const { signal } = await w.exited
      expect(signal).toBe('SIGKILL')
    }
    const drain = startWriter({ MODE: 'drain' })
    const summary = await new Promise((resolve, reject) => {
      drain.lines.on('line', (l) => { if (l.startsWith('drained')) resolve(l) })
      drain.exited.then(({ code, stderr }) => { if (code !== 0) reject(new Error(`drain failed (${code}): ${stderr}`)) })
    })
    expect(summary).toMatch(/^drained true/)
    expect((await drain.exited).code).toBe(0)
    const result = await compareDatabases(servers.local.uri, servers.atlas.uri, dbName)
    assertConverged(result)
    expect(totalWrites).toBeGreaterThan(CYCLES * 5)
    expect(result.reduce((n, r) => n + r.localCount, 0)).toBeGreaterThan(0)
  }, 600_000)
})
