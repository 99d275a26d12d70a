// Offline is normal: a POS boots with the internet down (an unresolvable
// mongodb+srv Atlas URI, or a stopped Atlas) with a start-up full sync and a
// per-second cron. createSync resolves, writes are journaled, the job waits
// for Atlas and says so, nothing is rejected unhandled and no secret shows in
// metrics or logs. A second start on the same data dir with Atlas reachable
// drains everything and converges.
import { describe, it, expect, beforeAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'

const require = createRequire(import.meta.url)
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { startFixture } = require('./helpers/fixture.js')

const APP = path.join(__dirname, 'fixtures', 'offlineapp.js')
const SECRET = 'pa55-s3cret-offline'
const WRITES = 60
let servers

/** Runs the fixture to its end: its log lines, its report and its exit. */
async function run (env) {
  const p = startFixture(APP, { WRITES: String(WRITES), ...env })
  const lines = []
  p.lines.on('line', (l) => lines.push(l))
  // 'exit' can come before the last stdout lines are read: wait for the end of the stream too.
  const ended = new Promise((resolve) => p.lines.once('close', resolve))
  const { code, stderr } = await p.exited
  await ended
  const reportLine = lines.find((l) => l.startsWith('report '))
  return { code, stderr, lines, report: reportLine ? JSON.parse(reportLine.slice(7)) : null }
}

function expectOfflinePhase (phase, atlasWord, secret = SECRET) {
  expect(phase.lines.filter((l) => /^(unhandled|failed) /.test(l))).toEqual([])
  expect(phase.code).toBe(0)
  expect(phase.lines.some((l) => /^created \d+$/.test(l))).toBe(true)
  const { metrics, health } = phase.report
  // Every write is journaled and waits there.
  expect(metrics.enqueued).toBeGreaterThanOrEqual(WRITES)
  expect(metrics.backlog.total).toBeGreaterThan(0)
  expect(metrics.applied.total).toBe(0)
  // The start-up full sync is accepted and waits for Atlas, saying why.
  expect(metrics.fullSync).toMatchObject({ kind: 'fullSync', state: 'waiting' })
  expect(metrics.fullSync.waitingFor).toMatch(atlasWord)
  expect(health.status).not.toBe('healthy')
  expect(health.reasons.join(' ')).toMatch(/Atlas unreachable/)
  // The per-second cron ticked while it waited, without starting a second job or throwing.
  expect(phase.lines.filter((l) => /scheduled full sync skipped/.test(l)).length).toBeGreaterThanOrEqual(1)
  expect(phase.lines.filter((l) => /scheduled full sync could not start/.test(l))).toEqual([])
  const everything = [...phase.lines, phase.stderr].join('\n')
  expect(everything).not.toContain(secret)
}

async function expectDrained (env, dbName) {
  const phase = await run({ ...env, MODE: 'drain' })
  expect(phase.lines.filter((l) => /^(unhandled|failed) /.test(l))).toEqual([])
  expect(phase.code).toBe(0)
  expect(phase.report.drained).toBe(true)
  expect(phase.report.job).toMatchObject({ state: 'done' })
  expect(phase.report.metrics.journal.recovered).toBeGreaterThan(0)
  const result = await compareDatabases(servers.local.uri, servers.atlas.uri, dbName)
  assertConverged(result)
  expect(result.reduce((n, r) => n + r.localCount, 0)).toBeGreaterThan(WRITES / 2)
}

beforeAll(async () => {
  servers = await useServers()
})

describe('offline boot', () => {
  it('boots with an unresolvable mongodb+srv Atlas URI, journals writes, and drains once Atlas is reachable', async () => {
    const dbName = uniqueDbName('offline_dns')
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-offline-'))
    const base = { LOCAL_URI: `${servers.local.uri}/${dbName}`, DATA_DIR: dataDir }
    const offline = await run({ ...base, ATLAS_URI: `mongodb+srv://pos:${SECRET}@nonexistent.invalid/${dbName}?retryWrites=true` })
    expectOfflinePhase(offline, /Atlas/)
    await expectDrained({ ...base, ATLAS_URI: `${servers.atlas.uri}/${dbName}` }, dbName)
  }, 300_000)

  it('boots with Atlas reachable but down (stopped server) and converges once it starts', async () => {
    const dbName = uniqueDbName('offline_down')
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-offline-'))
    const u = new URL(servers.atlas.uri)
    // A test bed with a real login (documentdb) keeps it, and its password is the secret to look
    // for; FerretDB accepts PLAIN without checking it, so a made-up password stands in there.
    const realLogin = Boolean(u.username)
    const secret = realLogin ? decodeURIComponent(u.password) : SECRET
    const atlasUri = realLogin
      ? `${servers.atlas.uri}/${dbName}`
      : `mongodb://pos:${SECRET}@${u.host}/${dbName}?authMechanism=PLAIN&authSource=%24external`
    const env = { LOCAL_URI: `${servers.local.uri}/${dbName}`, DATA_DIR: dataDir, ATLAS_URI: atlasUri }
    await servers.atlas.stop()
    let offline
    try {
      offline = await run(env)
    } finally {
      await servers.atlas.start()
    }
    expectOfflinePhase(offline, /Atlas/, secret)
    // The same URI (with its password) now connects.
    await expectDrained(env, dbName)
  }, 300_000)
})
