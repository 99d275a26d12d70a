'use strict'
// Runs a fixture app (__test__/fixtures/*.js) as a real child process: its stdout as lines,
// its stderr collected, and a promise of its exit.
const { spawn } = require('node:child_process')
const readline = require('node:readline')

/**
 * @param {string} file fixture script
 * @param {object} env added to process.env
 * @returns {{child: import('node:child_process').ChildProcess, lines: import('node:readline').Interface,
 *   exited: Promise<{code: number|null, signal: string|null, stderr: string}>}}
 */
function startFixture (file, env) {
  const child = spawn(process.execPath, [file], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d) => { stderr += d })
  const lines = readline.createInterface({ input: child.stdout })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stderr })))
  return { child, lines, exited }
}

/**
 * Resolves with the match of the first stdout line matching `re`; rejects if the process exits first.
 * @param {ReturnType<typeof startFixture>} p
 * @param {RegExp} re
 */
function lineMatching (p, re) {
  return new Promise((resolve, reject) => {
    p.lines.on('line', (l) => { const m = re.exec(l); if (m) resolve(m) })
    p.exited.then(({ code, stderr }) => reject(new Error(`process exited (code ${code}) before printing ${re}: ${stderr}`)))
  })
}

module.exports = { startFixture, lineMatching }
