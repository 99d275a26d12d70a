// Graceful shutdown through the README pattern: an Express app with
// `sync.handleSignals({ server })` gets SIGINT / SIGTERM while requests from
// this (other) process keep writing, and is restarted on the same journal.
// Every write the app acknowledged (HTTP 2xx) must reach Atlas, and after the
// final drain Atlas equals local byte for byte. DUALSYNC_SHUTDOWN_CYCLES sets
// the count (12 by default).
import { describe, it, expect, beforeAll } from 'vitest'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'

const require = createRequire(import.meta.url)
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { MongoClient } = require('mongodb')
const { startFixture, lineMatching } = require('./helpers/fixture.js')

const CYCLES = Number(process.env.DUALSYNC_SHUTDOWN_CYCLES || 12)
const APP = path.join(__dirname, 'fixtures', 'shopapp.js')
const WRITER = path.join(__dirname, 'fixtures', 'writer.js')
const CLIENTS = 4
let servers, dbName, dataDir

function start (file, env = {}) {
  return startFixture(file, { LOCAL_URI: `${servers.local.uri}/${dbName}`, ATLAS_URI: `${servers.atlas.uri}/${dbName}`, DATA_DIR: dataDir, ...env })
}

/**
 * One client: writes until the app refuses connections. Only 2xx answers
 * count as acknowledged; a failed request proves nothing either way.
 */
async function client (port, state, id) {
  let seed = id * 7919 + state.cycle
  const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n }
  const post = (p, body) => fetch(`http://127.0.0.1:${port}${p}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  for (;;) {
    let res
    const r = rand(10)
    try {
      if (state.keys.length === 0 || r < 4) {
        const key = `c${state.cycle}-${id}-${state.seq++}`
        res = await post('/bills', { key, table: rand(10) })
        if (res.status === 201) state.keys.push(key)
      } else if (r < 9) {
        res = await post(`/bills/${state.keys[rand(state.keys.length)]}/add`, { amount: rand(50), item: `i${rand(5)}` })
      } else {
        res = await post(`/tables/${rand(10)}/note`, { note: `n${state.seq++}` })
      }
    } catch {
      return // connection refused or cut: the app is stopping
    }
    await res.arrayBuffer()
    if (res.status >= 200 && res.status < 300) state.acked++
    else if (res.status !== 404) state.errors.push(`${res.status}`)
  }
}

beforeAll(async () => {
  servers = await useServers()
  dbName = uniqueDbName('shutdown')
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-shutdown-'))
})

describe('graceful shutdown under load', () => {
  it(`keeps every acknowledged write across ${CYCLES} SIGINT/SIGTERM restarts`, async () => {
    const state = { keys: [], seq: 0, acked: 0, cycle: 0, errors: [] }
    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      state.cycle = cycle
      const app = start(APP)
      const port = Number((await lineMatching(app, /^port (\d+)$/))[1])
      const before = state.acked
      const clients = Array.from({ length: CLIENTS }, (_, i) => client(port, state, i))
      const target = before + 10 + Math.floor(Math.random() * 50)
      while (state.acked < target) await new Promise((resolve) => setImmediate(resolve))
      const signal = cycle % 2 ? 'SIGINT' : 'SIGTERM'
      app.child.kill(signal)
      await Promise.all(clients)
      const { code, signal: killed, stderr } = await app.exited
      expect({ code, killed }).toEqual({ code: 0, killed: null })
      // A capture that failed or was dropped is logged at error level.
      expect(stderr).not.toMatch(/capture (lost|failed)|shutdown failed/)
      expect(state.acked).toBeGreaterThan(before)
    }
    expect(state.errors).toEqual([])
    const drain = start(WRITER, { MODE: 'drain' })
    const summary = (await lineMatching(drain, /^drained .*/))[0]
    expect(summary).toMatch(/^drained true/)
    expect((await drain.exited).code).toBe(0)
    const result = await compareDatabases(servers.local.uri, servers.atlas.uri, dbName)
    assertConverged(result)
    // Every acknowledged create is there (the comparison alone would pass if both sides lost it).
    const atlas = new MongoClient(servers.atlas.uri)
    try {
      const found = await atlas.db(dbName).collection('bills').countDocuments({ key: { $in: state.keys } })
      expect(found).toBe(state.keys.length)
    } finally {
      await atlas.close()
    }
    expect(state.keys.length).toBeGreaterThan(CYCLES)
  }, 900_000)
})
