'use strict'
// The Atlas link model: named profiles (round-trip time × bandwidth) applied to the loopback
// proxy of __test__/helpers/proxy.js (one-way delay = RTT/2 each way, jitter, a token bucket
// per direction). "MB" is 10^6 bytes.

const path = require('node:path')
const { fork } = require('node:child_process')
const { startProxy } = require('../../__test__/helpers/proxy')

const RTTS = [20, 60, 150]
const RATES = [2, 10]

/** Every profile, named `rtt<ms>-<MB/s>mbps` (e.g. `rtt60-2mbps`). */
const PROFILES = RTTS.flatMap((rttMs) => RATES.map((mbps) => ({
  name: `rtt${rttMs}-${mbps}mbps`,
  rttMs,
  bytesPerSec: mbps * 1e6,
  // a café's line is not a constant: ±10 % of the one-way delay
  jitterMs: Math.round(rttMs / 2 * 0.1)
})))

/**
 * @param {string} name a profile name
 * @returns {{name: string, rttMs: number, bytesPerSec: number, jitterMs: number}}
 */
function profile (name) {
  const p = PROFILES.find((x) => x.name === name)
  if (!p) {
    const e = new Error(`unknown link profile ${JSON.stringify(name)}; known: ${PROFILES.map((x) => x.name).join(', ')}`)
    e.code = 'ERR_BENCH_LINK_PROFILE'
    throw e
  }
  return p
}

/**
 * Starts a proxy in front of `server` shaped like profile `p`.
 * @param {{port: number}} server
 * @param {{rttMs: number, jitterMs: number, bytesPerSec: number}} p
 */
async function startLink (server, p) {
  const proxy = await startProxy({ target: { host: '127.0.0.1', port: server.port } })
  shape(proxy, p)
  return proxy
}

/**
 * Like `startLink`, with the proxy in a child process: what runs in this process (the café
 * workload) then does not pay for shaping the link, as it would not on a café PC.
 * `stats()` is async here; `bytes()` takes either kind.
 * @param {{port: number}} server
 * @param {{rttMs: number, jitterMs: number, bytesPerSec: number}} p
 */
async function startLinkProcess (server, p) {
  const child = fork(path.join(__dirname, 'link-child.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const reply = () => new Promise((resolve, reject) => {
    const onExit = (code) => reject(new Error(`link process exited (code ${code})`))
    child.once('exit', onExit)
    child.once('message', (m) => {
      child.off('exit', onExit)
      if (m.error) reject(new Error(`link process: ${m.error}`))
      else resolve(m)
    })
  })
  child.send({ target: { host: '127.0.0.1', port: server.port }, profile: p })
  const { ready: port } = await reply()
  return {
    port,
    pid: child.pid,
    uri: (baseUri) => baseUri.replace(/^(mongodb:\/\/(?:[^@/]*@)?)[^/?]+/, (_, head) => `${head}127.0.0.1:${port}`),
    async stats () {
      child.send({ op: 'stats' })
      return (await reply()).stats
    },
    async close () {
      if (child.exitCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.send({ op: 'close' })
      await exited
    }
  }
}

/** Applies profile `p` to a running proxy (jitter on top of half the RTT, each way). */
function shape (proxy, p) {
  proxy.setLatency(Math.max(0, p.rttMs / 2 - p.jitterMs / 2), p.jitterMs)
  proxy.setBandwidth(p.bytesPerSec)
}

/** Bytes the proxy delivered so far in each direction (a promise for a `startLinkProcess` one). */
function bytes (proxy) {
  const toBytes = (s) => ({ up: s.bytesToTarget, down: s.bytesFromTarget })
  const s = proxy.stats()
  return typeof s.then === 'function' ? s.then(toBytes) : toBytes(s)
}

module.exports = { PROFILES, profile, startLink, startLinkProcess, shape, bytes }
