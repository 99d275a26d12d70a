'use strict'
/**
 * App instances as PM2 runs them: child processes of __test__/fixtures/instance.js, each with
 * its NODE_APP_INSTANCE, driven over IPC. Every request waits for the instance's answer (no
 * sleeps); output is kept for assertions on log lines.
 */
const { fork } = require('node:child_process')
const path = require('node:path')

const INSTANCE = path.join(__dirname, '..', 'fixtures', 'instance.js')

/**
 * Starts one instance. Resolve `ready` before sending commands.
 * @param {{env: object, instance?: number|string}} opts env: LOCAL_URI, ATLAS_URI, DATA_DIR, OPTS...
 * @returns {{child: import('node:child_process').ChildProcess, ready: Promise<void>,
 *   exited: Promise<{code: number|null, signal: string|null}>, output(): string,
 *   request(msg: object): Promise<object>}}
 */
function startInstance ({ env, instance }) {
  const childEnv = { ...process.env, ...env }
  delete childEnv.NODE_APP_INSTANCE
  if (instance !== undefined) childEnv.NODE_APP_INSTANCE = String(instance)
  const child = fork(INSTANCE, [], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
  let out = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { out += d })
  const waiting = new Map()
  child.on('message', (msg) => {
    const queue = waiting.get(msg.re)
    const next = queue && queue.shift()
    if (next) next(msg)
  })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  const answer = (re) => new Promise((resolve, reject) => {
    if (!waiting.has(re)) waiting.set(re, [])
    waiting.get(re).push(resolve)
    exited.then(({ code, signal }) => reject(new Error(`instance ${instance} exited (${code ?? signal}) before answering ${re}:\n${out}`)))
  })
  const ready = answer('ready').then(() => undefined)
  return {
    child,
    ready,
    exited,
    output: () => out,
    /** Sends a command and resolves with its answer; rejects if the answer is an error. */
    async request (msg) {
      const reply = answer(msg.cmd)
      child.send(msg)
      const r = await reply
      if (r.error) throw new Error(`instance ${instance} ${msg.cmd}: ${r.error}`)
      return r
    }
  }
}

module.exports = { startInstance }
