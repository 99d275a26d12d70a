// Runs the dualsync CLI as a user would: a child process (`node lib/cli/main.js ...`), with pipes
// or, through util-linux `script`, on a pseudo-terminal. The child's environment drops the
// caller's MONGODB_* / SYNC_* variables so only what a test passes configures it.
import { spawn, spawnSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const CLI = path.join(ROOT, 'lib', 'cli', 'main.js')

function childEnv (extra) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^(MONGODB_|SYNC_)/.test(k)) env[k] = v
  return { ...env, ...extra }
}

function collect (cmd, args, { env = {}, timeoutMs = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] })
    const out = []
    const err = []
    child.stdout.on('data', (d) => out.push(d))
    child.stderr.on('data', (d) => err.push(d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${path.basename(cmd)} ${args.join(' ')} did not exit within ${timeoutMs} ms`))
    }, timeoutMs)
    child.on('error', (e) => { clearTimeout(timer); reject(e) })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() })
    })
  })
}

/**
 * Runs `node lib/cli/main.js ...args` with piped (non-TTY) stdout and stderr.
 * @param {string[]} args
 * @param {{env?: object, timeoutMs?: number}} [opts]
 * @returns {Promise<{code: number|null, signal: string|null, stdout: string, stderr: string}>}
 */
export function runCli (args, opts) {
  return collect(process.execPath, [CLI, ...args], opts)
}

/** @returns {boolean} whether util-linux `script` is available to provide a terminal */
export function hasScript () {
  const r = spawnSync('script', ['--version'], { encoding: 'utf8' })
  return r.status === 0 && /util-linux/.test(r.stdout)
}

const quote = (s) => `'${String(s).replace(/'/g, "'\\''")}'`

/**
 * Runs the CLI on a pseudo-terminal (`script -qefc`): stdout and stderr both go to the terminal,
 * whose whole output comes back as `stdout`; `code` is the CLI's exit code (-e).
 * @param {string[]} args
 * @param {{env?: object, timeoutMs?: number}} [opts]
 */
export function runCliInTty (args, opts) {
  const command = [process.execPath, CLI, ...args].map(quote).join(' ')
  return collect('script', ['-qefc', command, '/dev/null'], opts)
}

/**
 * Runs a Node script (e.g. a test fixture) as a child process with piped output.
 * @param {string} file
 * @param {string[]} args
 * @param {{env?: object, timeoutMs?: number}} [opts]
 */
export function runNode (file, args, opts) {
  return collect(process.execPath, [file, ...args], opts)
}
