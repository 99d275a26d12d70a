// PM2 itself, the users' deployment: the README's app (fixtures/shopapp.js) in cluster mode, two
// instances, Atlas 20-60 ms away (a loopback proxy with jitter), and a `pm2 reload` while the
// café's requests keep coming. What must hold:
// - PM2 replaces both workers (new pids), and each new worker's createSync() waits for its old
//   worker to let go of the instance's data dir, then takes it over (the flow CONFIGURATION.md
//   "PM2" describes: PM2 stops the old worker once the new one listens or `listen_timeout`
//   passes; the new one listens once it has the dir);
// - every acknowledged write reaches Atlas, and Atlas ends equal to local byte for byte while
//   the instances run (no full sync, no CLI drain).
// PM2 runs with its own PM2_HOME (its daemon and logs), removed afterwards.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { useServers, uniqueDbName } from './helpers/servers.js'

const require = createRequire(import.meta.url)
const { MongoClient } = require('mongodb')
const { compareDatabases, assertConverged } = require('./helpers/compare.js')
const { startProxy } = require('./helpers/proxy.js')
const { waitFor } = require('./helpers/wait.js')

const PM2 = require.resolve('pm2/bin/pm2')
const APP = path.join(__dirname, 'fixtures', 'shopapp.js')
const INSTANCES = 2
let servers, proxy, pm2Home, dbName
const dataDirs = []

/** Runs the pm2 CLI against this test's own daemon; resolves with its stdout. */
function pm2 (...args) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [PM2, ...args], { env: { ...process.env, PM2_HOME: pm2Home }, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`pm2 ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`))
      else resolve(stdout)
    })
  })
}

/** The app's workers as PM2 lists them: pid, instance number and status. */
async function workers (name) {
  const out = await pm2('jlist')
  const list = JSON.parse(out.slice(out.indexOf('[')))
  return list.filter((p) => p.name === name).map((p) => ({ pid: p.pid, instance: p.pm2_env.NODE_APP_INSTANCE, status: p.pm2_env.status }))
}

/** Everything an app's workers logged so far (PM2 keeps each worker's stdout and stderr in files). */
function logs (name) {
  const dir = path.join(pm2Home, 'logs')
  if (!fs.existsSync(dir)) return ''
  return fs.readdirSync(dir).filter((f) => f.startsWith(`${name}-`)).map((f) => `--- ${f}\n${fs.readFileSync(path.join(dir, f), 'utf8')}`).join('\n')
}

function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port: p } = s.address()
      s.close(() => resolve(p))
    })
  })
}

/** One POST on a fresh connection (no keep-alive: a reload closes workers' sockets). */
function post (port, p, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body)
    const req = http.request({ host: '127.0.0.1', port, path: p, method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
    })
    req.on('error', reject)
    req.end(data)
  })
}

/**
 * The café's till until `state.stop`: a bill, then an item on it, each acknowledged before the
 * next. A request cut by the reload is sent again, as a till would (a bill created twice is two
 * documents local and Atlas must both have).
 */
async function till (port, state) {
  const send = async (p, body, ok) => {
    for (;;) {
      try {
        const status = await post(port, p, body)
        if (status === ok) return
        state.errors.push(`${p}: HTTP ${status}`)
        return
      } catch (e) {
        state.retries++
        if (state.retries > 200) throw new Error(`requests keep failing: ${e.message}`)
      }
    }
  }
  while (!state.stop) {
    const key = `${state.prefix}-${state.keys.length}`
    await send('/bills', { key, table: state.keys.length % 5 }, 201)
    await send(`/bills/${key}/add`, { amount: 3, item: 'coffee' }, 204)
    state.keys.push(key)
  }
}

beforeAll(async () => {
  servers = await useServers()
  proxy = await startProxy({ target: { port: Number(new URL(servers.atlas.uri).port) } })
  proxy.setLatency(20, 40)
  pm2Home = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-pm2-home-'))
  dbName = uniqueDbName('pm2')
})

afterAll(async () => {
  if (pm2Home) {
    await pm2('kill').catch(() => {}) // stops the workers (SIGINT) and the daemon
    fs.rmSync(pm2Home, { recursive: true, force: true })
  }
  for (const d of dataDirs) fs.rmSync(d, { recursive: true, force: true })
  await proxy?.close()
})

/**
 * Starts `name` in cluster mode ({@link INSTANCES} workers of the app, its own data dir and port)
 * and waits until every worker is online and the app answers.
 * @returns {Promise<{port: number, dataDir: string}>}
 */
async function startApp (name, env = {}) {
  const port = await freePort()
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `dualsync-${name}-`))
  dataDirs.push(dataDir)
  const ecosystem = path.join(pm2Home, `${name}.json`)
  fs.writeFileSync(ecosystem, JSON.stringify({
    apps: [{
      name,
      script: APP,
      instances: INSTANCES,
      exec_mode: 'cluster',
      kill_timeout: 15000, // above the app's drain (DRAIN_MS) plus its requests, as the docs ask
      // How long PM2 waits for a new worker to listen before it stops the old one anyway (3 s
      // by default): longer than a new worker needs to reach its createSync() on a busy
      // machine, so it always finds the old one still holding the dir.
      listen_timeout: 10000,
      autorestart: false, // a worker that dies must fail the test, not be hidden by a restart
      env: {
        LOCAL_URI: `${servers.local.uri}/${dbName}`,
        ATLAS_URI: proxy.uri(`${servers.atlas.uri}/${dbName}`),
        DATA_DIR: dataDir,
        DRAIN_MS: '5000',
        PORT: String(port),
        LOG_LEVEL: 'info',
        ...env
      }
    }]
  }))
  await pm2('start', ecosystem)
  await waitFor(`${name}: every worker online`, async () => {
    const w = await workers(name)
    return w.length === INSTANCES && w.every((x) => x.status === 'online')
  }, { timeoutMs: 60_000, intervalMs: 200 })
  await waitFor(`${name} answering`, async () => (await post(port, '/bills/none/add', { amount: 0, item: '-' })) === 404, { timeoutMs: 60_000, intervalMs: 100 })
  return { port, dataDir }
}

/** Waits until Atlas equals local (the running instances drain on their own), then asserts it. */
async function expectConverged () {
  let result
  await waitFor('Atlas equal to local', async () => {
    result = await compareDatabases(servers.local.uri, servers.atlas.uri, dbName)
    try {
      assertConverged(result)
      return true
    } catch {
      return false
    }
  }, { timeoutMs: 120_000, intervalMs: 250 })
  assertConverged(result)
}

/** Every acknowledged bill is on Atlas with its item (the comparison alone would pass if both sides lost it). */
async function expectOnAtlas (keys) {
  const atlas = new MongoClient(servers.atlas.uri)
  try {
    const bills = atlas.db(dbName).collection('bills')
    const withItem = new Set((await bills.find({ key: { $in: keys }, items: 'coffee' }, { projection: { key: 1 } }).toArray()).map((b) => b.key))
    expect(keys.filter((k) => !withItem.has(k))).toEqual([])
  } finally {
    await atlas.close()
  }
}

/** Runs `body`; on failure, adds the app's PM2 logs to the error. */
async function withLogs (name, state, body) {
  try {
    await body()
  } catch (e) {
    state.stop = true
    await state.running?.catch(() => {})
    e.message += `\n--- PM2 logs of ${name}:\n${logs(name).slice(-20000)}`
    throw e
  }
}

describe('PM2 cluster mode', () => {
  it(`${INSTANCES} instances, pm2 reload under load: both workers replaced, every acknowledged write on Atlas, Atlas equal to local`, async () => {
    const name = 'dualsync-reload'
    const state = { prefix: 'reload', keys: [], errors: [], retries: 0, stop: false, running: null }
    await withLogs(name, state, async () => {
      const { port } = await startApp(name)
      const before = await workers(name)
      state.running = till(port, state)
      await waitFor('writes before the reload', () => state.keys.length >= 30, { timeoutMs: 60_000 })
      const atReload = state.keys.length
      await pm2('reload', name)
      await waitFor('writes after the reload', () => state.keys.length >= atReload + 30, { timeoutMs: 60_000 })
      state.stop = true
      await state.running

      const after = await workers(name)
      expect(after.map((w) => w.status)).toEqual(after.map(() => 'online'))
      expect(after).toHaveLength(INSTANCES)
      // Replaced, not restarted in place: every pid is new.
      for (const w of after) expect(before.map((b) => b.pid)).not.toContain(w.pid)
      // Each new worker found its instance's dir held by the old one and took it over (the
      // reload can return before the last old worker has finished draining).
      const held = (i) => new RegExp(`data dir \\S*instance-${i} is held by .*: waiting up to`)
      const taken = (i) => new RegExp(`✓ data dir \\S*instance-${i} taken over after \\d+ ms of waiting`)
      for (let i = 0; i < INSTANCES; i++) {
        await waitFor(`instance-${i}'s dir taken over by its new worker`, () => taken(i).test(logs(name)), { timeoutMs: 60_000, intervalMs: 100 })
        expect(logs(name)).toMatch(held(i))
      }
      expect(logs(name)).not.toMatch(/capture (lost|failed)|shutdown failed/)
      expect(state.errors).toEqual([])
      await expectConverged()
      await expectOnAtlas(state.keys)
    })
    await pm2('delete', name)
  }, 300_000)
})
