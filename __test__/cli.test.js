// The `dualsync` CLI run as a user runs it: a child process (`node lib/cli/main.js ...`) against
// two real servers (FerretDB via scripts/testbed.js). Exit codes: 0 consistent/done,
// 1 differences, 2 error. Progress goes to stderr only when stderr is a terminal.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'
import { runCli, runCliInTty, runNode, hasScript, ROOT } from './helpers/runcli.js'

const require = createRequire(import.meta.url)
const { MongoClient } = require('mongodb')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')

const BAR = /[█░]/
const SECRET = 'S3cretPass'
const DEAD_URI = `mongodb://user:${SECRET}@127.0.0.1:1/db`

let servers, local, atlas
const tmpDirs = []

beforeAll(async () => {
  servers = await useServers()
  local = new MongoClient(servers.local.uri)
  atlas = new MongoClient(servers.atlas.uri)
})

afterAll(async () => {
  await local?.close()
  await atlas?.close()
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true })
})

function tmpDir () {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-cli-test-'))
  tmpDirs.push(d)
  return d
}

/** --local/--atlas for a database on the pair. */
function uris (db) {
  return ['--local', `${servers.local.uri}/${db}`, '--atlas', `${servers.atlas.uri}/${db}`]
}

/** The one JSON document a --json run prints on stdout (fails if anything else is there). */
function onlyJson (stdout) {
  const lines = stdout.split('\n').filter((l) => l.trim() !== '')
  expect(lines, `stdout should hold one JSON line, got:\n${stdout}`).toHaveLength(1)
  return JSON.parse(lines[0])
}

/** Two identical collections on both sides. */
async function seedConsistent (db) {
  const orders = Array.from({ length: 5 }, (_, i) => ({ _id: `o${i}`, total: i * 10, lines: [{ sku: 'a', qty: i }] }))
  const users = Array.from({ length: 3 }, (_, i) => ({ _id: `u${i}`, name: `user ${i}` }))
  for (const client of [local, atlas]) {
    await client.db(db).collection('orders').insertMany(orders)
    await client.db(db).collection('users').insertMany(users)
  }
}

describe('dualsync CLI', () => {
  it('verify: exit 0 when consistent, 1 with differences, and a --json report', async () => {
    const db = uniqueDbName('cli_verify')
    await seedConsistent(db)
    const ok = await runCli(['verify', ...uris(db)])
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toMatch(/^verify done: 8 documents scanned, 0 differences/m)
    expect(ok.stdout).toContain('✓ orders: local=5 atlas=5 missing=0 extra=0 different=0')
    expect(ok.stdout).toContain('✓ users: local=3 atlas=3 missing=0 extra=0 different=0')
    // stderr is a pipe: no progress bar
    expect(ok.stderr).not.toMatch(BAR)

    // The same, configured from the environment instead of flags.
    const fromEnv = await runCli(['verify'], {
      env: { MONGODB_LOCAL_URI: `${servers.local.uri}/${db}`, MONGODB_ATLAS_URI: `${servers.atlas.uri}/${db}` }
    })
    expect(fromEnv.code, fromEnv.stderr).toBe(0)
    expect(fromEnv.stdout).toContain('✓ orders: local=5 atlas=5')

    await atlas.db(db).collection('orders').deleteOne({ _id: 'o3' })
    await atlas.db(db).collection('users').updateOne({ _id: 'u1' }, { $set: { name: 'renamed on Atlas' } })
    await atlas.db(db).collection('users').insertOne({ _id: 'u9', name: 'only on Atlas' })

    const text = await runCli(['verify', ...uris(db)])
    expect(text.code, text.stderr).toBe(1)
    expect(text.stdout).toContain('✗ orders: local=5 atlas=4 missing=1 extra=0 different=0')
    expect(text.stdout).toContain('✗ users: local=3 atlas=4 missing=0 extra=1 different=1')

    const json = await runCli(['verify', '--json', ...uris(db)])
    expect(json.code, json.stderr).toBe(1)
    expect(json.stderr).not.toMatch(BAR)
    const out = onlyJson(json.stdout)
    expect(out.ok).toBe(true)
    expect(out.job).toMatchObject({
      kind: 'verify',
      state: 'done',
      error: null,
      collectionsTotal: 2,
      collectionsDone: 2,
      docsScanned: 9,
      differences: 3,
      repairsQueued: 0
    })
    expect(typeof out.job.id).toBe('string')
    expect(typeof out.job.ratePerSec).toBe('number')
    expect(out.job.reports).toEqual([
      expect.objectContaining({ collection: 'orders', localCount: 5, atlasCount: 4, missingOnAtlas: 1, extraOnAtlas: 0, different: 0, samplesMissing: ['o3'], samplesExtra: [], samplesDifferent: [], cancelled: false }),
      expect.objectContaining({ collection: 'users', localCount: 3, atlasCount: 4, missingOnAtlas: 0, extraOnAtlas: 1, different: 1, samplesMissing: [], samplesExtra: ['u9'], samplesDifferent: ['u1'], cancelled: false })
    ])

    // Scope and extras policy per collection: the default policy lists u9 (reported, left on
    // Atlas); the text line says so.
    expect(out.job.reports[1]).toMatchObject({ scope: null, extrasPolicy: 'report', extrasReported: 1, extrasDeleted: 0 })
    expect(text.stdout).toMatch(/✗ users: .* extras-policy=report \(1 reported, left on Atlas\)\n/)

    // With a scope, only its documents are compared: u9 and the renamed u1 are outside it.
    const scoped = await runCli(['verify', '--json', '--collections', 'users', ...uris(db)], {
      env: { SYNC_SCOPE: '{"users": {"_id": {"$in": ["u2", "u3"]}}}' }
    })
    expect(scoped.code).toBe(2)
    expect(scoped.stderr).toMatch(/SYNC_SCOPE: the scope of "users" filters on _id/)
    await local.db(db).collection('users').updateMany({}, { $set: { team: 'a' } })
    await atlas.db(db).collection('users').updateMany({ _id: { $in: ['u0', 'u2'] } }, { $set: { team: 'a' } })
    const byTeam = await runCli(['verify', '--json', '--collections', 'users', ...uris(db)], {
      env: { SYNC_SCOPE: '{"users": {"team": "a"}}' }
    })
    const teamReport = onlyJson(byTeam.stdout).job.reports[0]
    // u1 is renamed on Atlas and has no team there; u9 has none either: local has 3 in scope, Atlas 2.
    expect(teamReport).toMatchObject({ scope: { team: 'a' }, localCount: 3, atlasCount: 2, missingOnAtlas: 1, extraOnAtlas: 0, different: 0, samplesMissing: ['u1'] })
    expect(byTeam.code, byTeam.stderr).toBe(1)
    await local.db(db).collection('users').updateMany({}, { $unset: { team: '' } })
    await atlas.db(db).collection('users').updateMany({}, { $unset: { team: '' } })

    const one = await runCli(['verify', '--json', '--collections', 'users', ...uris(db)])
    expect(one.code, one.stderr).toBe(1)
    expect(onlyJson(one.stdout).job.reports.map((r) => r.collection)).toEqual(['users'])
  })

  it('full-sync: exit 0, then verify exits 0 and the servers have converged', async () => {
    const fdb = uniqueDbName('cli_full')
    await seedConsistent(fdb)
    await local.db(fdb).collection('orders').insertOne({ _id: 'o9', total: 90 })
    await atlas.db(fdb).collection('users').updateOne({ _id: 'u2' }, { $set: { name: 'stale' } })
    await atlas.db(fdb).collection('users').insertOne({ _id: 'u8' })
    // Enough repairs that they cannot all be applied while the scan runs: full-sync must drain them.
    const bulk = Array.from({ length: 1500 }, (_, i) => ({ _id: `b${i}`, i }))
    for (let i = 0; i < bulk.length; i += 500) await local.db(fdb).collection('bulk').insertMany(bulk.slice(i, i + 500))
    const dataDir = tmpDir()

    const before = await runCli(['verify', ...uris(fdb)])
    expect(before.code, before.stderr).toBe(1)
    // A pure mirror: the Atlas-only u8 is deleted (the default policy, report, would keep it).
    const mirror = { env: { SYNC_EXTRAS_POLICY: 'delete' } }
    const full = await runCli(['full-sync', '--json', '--data-dir', dataDir, ...uris(fdb)], mirror)
    expect(full.code, full.stderr).toBe(0)
    const out = onlyJson(full.stdout)
    expect(out).toMatchObject({ ok: true, job: { kind: 'fullSync', state: 'done', differences: 1503, repairsQueued: 1503 } })

    const again = await runCli(['verify', ...uris(fdb)])
    expect(again.code, again.stdout + again.stderr).toBe(0)
    assertConverged(await compareDatabases(local, atlas, fdb))

    // Text output, on a database that is already consistent.
    const text = await runCli(['full-sync', '--data-dir', dataDir, ...uris(fdb)], mirror)
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout).toMatch(/^fullSync done: 1509 documents scanned, 0 differences, 0 repairs queued/m)
  })

  it('status: exit 0 with document counts on both sides; --json shape', async () => {
    const sdb = uniqueDbName('cli_status')
    await local.db(sdb).collection('orders').insertMany([{ _id: 1 }, { _id: 2 }, { _id: 3 }])
    await atlas.db(sdb).collection('orders').insertMany([{ _id: 1 }, { _id: 2 }])
    await local.db(sdb).collection('notes').insertOne({ _id: 'n' })
    const dataDir = tmpDir()

    // URIs are printed with their credentials masked (the documentdb test bed's carry a password).
    const shown = (uri) => uri.replace(/^mongodb:\/\/[^@/]+@/, 'mongodb://***:***@')
    const secrets = [servers.local.uri, servers.atlas.uri]
      .map((u) => new URL(u).password)
      .filter(Boolean)
    const text = await runCli(['status', '--data-dir', dataDir, ...uris(sdb)])
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout).toContain(`✓ local ${shown(servers.local.uri)}/${sdb}`)
    expect(text.stdout).toContain(`✓ atlas ${shown(servers.atlas.uri)}/${sdb}`)
    for (const secret of secrets) expect(text.stdout + text.stderr).not.toContain(secret)
    expect(text.stdout).toContain('orders: local=3 atlas=2')
    expect(text.stdout).toContain('notes: local=1 atlas=-')

    const json = await runCli(['status', '--json', '--data-dir', dataDir, ...uris(sdb)])
    expect(json.code, json.stderr).toBe(0)
    expect(onlyJson(json.stdout)).toEqual({
      ok: true,
      local: { name: 'local', uri: `${shown(servers.local.uri)}/${sdb}`, db: sdb, reachable: true, counts: { notes: 1, orders: 3 } },
      atlas: { name: 'atlas', uri: `${shown(servers.atlas.uri)}/${sdb}`, db: sdb, reachable: true, counts: { orders: 2 } },
      journal: { exists: false, dir: path.resolve(dataDir) }
    })
  })

  it('drain: sends a backlog another process journaled while Atlas was down; exit 0, converged', async () => {
    const ddb = uniqueDbName('cli_drain')
    const ids = Array.from({ length: 50 }, (_, i) => `p${String(i).padStart(2, '0')}`)
    await local.db(ddb).collection('pending').insertMany(ids.map((_id, i) => ({ _id, i, note: 'written while Atlas was down' })))
    const dataDir = tmpDir()

    await servers.atlas.stop()
    let child, early
    try {
      child = await runNode(path.join(ROOT, '__test__', 'helpers', 'enqueue-offline.js'),
        [`${servers.local.uri}/${ddb}`, `${servers.atlas.uri}/${ddb}`, dataDir, 'pending', JSON.stringify(ids)])
      // A drain while Atlas is still down gives up after --timeout-ms and keeps the backlog.
      early = await runCli(['drain', '--json', '--timeout-ms', '1500', '--data-dir', dataDir, ...uris(ddb)])
    } finally {
      await servers.atlas.start()
    }
    expect(child.code, child.stderr).toBe(0)
    expect(JSON.parse(child.stdout)).toMatchObject({ enqueued: 50, applied: 0 })
    expect(early.code, early.stderr).toBe(2)
    expect(onlyJson(early.stdout)).toMatchObject({ ok: false, recovered: 50, applied: 0, backlog: 50 })
    expect(await atlas.db(ddb).collection('pending').countDocuments()).toBe(0)

    // status sees the journal the app left behind
    const status = await runCli(['status', '--json', '--data-dir', dataDir, ...uris(ddb)])
    expect(status.code, status.stderr).toBe(0)
    const journal = onlyJson(status.stdout).journal
    expect(journal.exists).toBe(true)
    expect(journal.bytes).toBeGreaterThan(0)

    const drain = await runCli(['drain', '--json', '--data-dir', dataDir, ...uris(ddb)])
    expect(drain.code, drain.stderr).toBe(0)
    expect(onlyJson(drain.stdout)).toMatchObject({ ok: true, recovered: 50, applied: 50, deadLetters: 0, backlog: 0 })
    assertConverged(await compareDatabases(local, atlas, ddb))

    // Drained means gone from the journal: a second drain has nothing to send.
    const again = await runCli(['drain', '--data-dir', dataDir, ...uris(ddb)])
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout).toMatch(/^drained: 0 recovered marks, 0 documents applied, 0 dead letters, backlog 0/)
  })

  it('bad arguments: exit 2 with the usage', async () => {
    const unknownFlag = await runCli(['verify', '--bogus'])
    expect(unknownFlag.code).toBe(2)
    expect(unknownFlag.stderr).toContain("'--bogus'")
    expect(unknownFlag.stderr).toContain('Usage: dualsync <command> [options]')

    const unknownCommand = await runCli(['frobnicate'])
    expect(unknownCommand.code).toBe(2)
    expect(unknownCommand.stderr).toContain('unknown command "frobnicate"')
    expect(unknownCommand.stderr).toContain('Usage: dualsync <command> [options]')

    const none = await runCli([])
    expect(none.code).toBe(2)
    expect(none.stdout + none.stderr).toContain('Usage: dualsync <command> [options]')

    const missingValue = await runCli(['verify', '--local'])
    expect(missingValue.code).toBe(2)
    expect(missingValue.stderr).toContain('--local')

    // No URI anywhere: the error names the variable to set.
    const noUri = await runCli(['verify'])
    expect(noUri.code).toBe(2)
    expect(noUri.stderr).toContain('MONGODB_LOCAL_URI')

    const help = await runCli(['--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('Exit codes: 0 consistent / done, 1 differences found, 2 error.')
  })

  it('unreachable server: exit 2 with a message that does not reveal the password', async () => {
    const verify = await runCli(['verify', '--local', DEAD_URI, '--atlas', DEAD_URI])
    expect(verify.code).toBe(2)
    expect(verify.stdout + verify.stderr).toMatch(/127\.0\.0\.1:1/)
    expect(verify.stdout + verify.stderr).toMatch(/failed|unreachable|not reachable/i)
    expect(verify.stdout + verify.stderr).not.toContain(SECRET)

    const json = await runCli(['verify', '--json', '--local', DEAD_URI, '--atlas', DEAD_URI])
    expect(json.code).toBe(2)
    const out = onlyJson(json.stdout)
    expect(out.ok).toBe(false)
    expect(out.job.state).toBe('failed')
    expect(out.job.error).toMatch(/127\.0\.0\.1:1/)
    expect(json.stdout + json.stderr).not.toContain(SECRET)

    const status = await runCli(['status', '--json', '--data-dir', tmpDir(), '--local', DEAD_URI, '--atlas', DEAD_URI])
    expect(status.code).toBe(2)
    const s = onlyJson(status.stdout)
    expect(s).toMatchObject({ ok: false, local: { reachable: false }, atlas: { reachable: false } })
    expect(s.local.error).toBeTruthy()
    expect(status.stdout + status.stderr).not.toContain(SECRET)
  }, 120_000)

  it.runIf(hasScript())('progress bar on a terminal; with --json the terminal shows only the JSON', async () => {
    const pdb = uniqueDbName('cli_tty')
    await seedConsistent(pdb)
    const tty = await runCliInTty(['verify', ...uris(pdb)])
    expect(tty.code, tty.stdout).toBe(0)
    expect(tty.stdout).toMatch(BAR)
    expect(tty.stdout).toMatch(/\d+% \d+\/\d+ docs/)
    expect(tty.stdout).toContain('✓ orders: local=5 atlas=5')

    const ttyJson = await runCliInTty(['verify', '--json', ...uris(pdb)])
    expect(ttyJson.code, ttyJson.stdout).toBe(0)
    expect(ttyJson.stdout).not.toMatch(BAR)
    expect(onlyJson(ttyJson.stdout.replace(/\r/g, ''))).toMatchObject({ ok: true, job: { kind: 'verify', differences: 0 } })

    // Without a terminal and without --json: the report on stdout, still no bar anywhere.
    const piped = await runCli(['verify', ...uris(pdb)])
    expect(piped.code).toBe(0)
    expect(piped.stdout + piped.stderr).not.toMatch(BAR)
  })
})
