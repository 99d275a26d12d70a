#!/usr/bin/env node
'use strict'
/**
 * dualsync benchmarks: `npm run bench` = `node bench/run.js [--engine ferretdb|documentdb] [--smoke] [--only a,b] [--no-index-fix] [--server-disk] [--wait-idle]`.
 *
 * Each scenario runs in its own Node process (fresh heap, RSS and native engine) against its
 * own fresh local + "Atlas" server pair, measures its baseline in the same run on the same
 * servers, and writes bench/results/<engine>/<scenario>.json (--smoke: bench/results/<engine>/smoke/).
 * --engine picks the test bed (DUALSYNC_TESTBED for the children; default: DUALSYNC_TESTBED, else
 * ferretdb). Then that engine's results table in docs/PERFORMANCE.md (full runs only) and the chart summary.png are rebuilt
 * from every result file present. The bench reports; it never fails on a missed goal (exit
 * code 1 only when a scenario could not run).
 */

const path = require('node:path')
const { fork } = require('node:child_process')
const { environment } = require('./lib/env')
const { resultsDir, writeResult, readResults } = require('./lib/results')

const SCENARIOS = ['capture', 'enqueue', 'drain', 'lag', 'memory', 'verify', 'link', 'catchup']
const ENGINES = ['ferretdb', 'documentdb']
const USAGE = `usage: node bench/run.js [--engine ${ENGINES.join('|')}] [--smoke] [--only ${SCENARIOS.join(',')}] [--no-index-fix] [--server-disk] [--wait-idle]`

function badArg (msg) {
  const e = new Error(`${msg}\n${USAGE}`)
  e.code = 'ERR_BENCH_ARGS'
  return e
}

function parseArgs (argv) {
  const o = { smoke: false, only: null, child: null, indexFix: true, serverDisk: false, waitIdle: false, engine: process.env.DUALSYNC_TESTBED || 'ferretdb' }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--smoke') o.smoke = true
    else if (a === '--no-index-fix') o.indexFix = false
    else if (a === '--server-disk') o.serverDisk = true
    else if (a === '--wait-idle') o.waitIdle = true
    else if (a === '--only') o.only = String(argv[++i] || '').split(',').map((s) => s.trim()).filter(Boolean)
    else if (a.startsWith('--only=')) o.only = a.slice(7).split(',').map((s) => s.trim()).filter(Boolean)
    else if (a === '--engine') o.engine = String(argv[++i] || '')
    else if (a.startsWith('--engine=')) o.engine = a.slice(9)
    else if (a === '--child') o.child = argv[++i]
    else if (a === '-h' || a === '--help') o.help = true
    else throw badArg(`unknown argument ${a}`)
  }
  if (!ENGINES.includes(o.engine)) {
    throw badArg(`--engine ${JSON.stringify(o.engine)} (or DUALSYNC_TESTBED) is not a bench engine; expected one of: ${ENGINES.join(', ')}`)
  }
  if (o.only) {
    const bad = o.only.filter((n) => !SCENARIOS.includes(n))
    if (bad.length) throw badArg(`--only: unknown scenario(s) ${bad.join(', ')}; known: ${SCENARIOS.join(', ')}`)
  }
  return o
}

/** Fraction of all cores busy over `ms` (from /proc/stat); null where unavailable. */
async function busyFraction (ms) {
  const read = () => {
    const f = require('node:fs').readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    return { idle: f[3] + (f[4] || 0), total: f.reduce((a, b) => a + b, 0) }
  }
  try {
    const a = read()
    await new Promise((resolve) => setTimeout(resolve, ms))
    const b = read()
    return 1 - (b.idle - a.idle) / Math.max(1, b.total - a.total)
  } catch {
    return null
  }
}

/** --wait-idle: on a shared machine, start a scenario only once other work has calmed down. */
async function waitIdle (maxMs = 15 * 60 * 1000) {
  const until = Date.now() + maxMs
  let quiet = 0
  let said = false
  while (Date.now() < until) {
    const busy = await busyFraction(2000)
    if (busy === null) return null
    quiet = busy < 0.2 ? quiet + 1 : 0
    if (quiet >= 3) return busy
    if (!said && busy >= 0.2) { log(`waiting for the machine to be idle (now ${Math.round(busy * 100)} % busy)`); said = true }
  }
  log('machine still busy after 15 min: running anyway')
  return null
}

function log (msg) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`)
}

/** Child process: runs one scenario end to end and writes its result file. */
async function runChild (name, opts) {
  const servers = require('./lib/servers')
  servers.setIndexFix(opts.indexFix)
  servers.setServerDisk(opts.serverDisk)
  const scenario = require(path.join(__dirname, 'scenarios', `${name}.js`))
  process.env.DUALSYNC_TESTBED = opts.engine
  const started = Date.now()
  const loadStart = require('node:os').loadavg()[0]
  const pair = await servers.startPair()
  const slog = (m) => log(`${name}: ${m}`)
  let out
  try {
    out = await scenario.run({ smoke: opts.smoke, pair, log: slog })
  } catch (e) {
    // a server that died or hung is the usual suspect: show what each printed last
    for (const s of [pair.local, pair.atlas]) {
      slog(`${s.name} server: ${s.pid ? `running (pid ${s.pid})` : 'NOT running'}; last output:\n${s.outputTail || '(none)'}`)
    }
    throw e
  } finally {
    await pair.stop().catch((e) => slog(`stopping servers failed: ${e.message}`))
    require('./lib/engine').removeTempDirs()
  }
  const data = {
    scenario: name,
    runId: process.env.BENCH_RUN_ID || null,
    title: scenario.title,
    goal: scenario.goal,
    smoke: opts.smoke,
    env: {
      ...environment(),
      idIndexFix: servers.indexFixActive(),
      serverData: pair.dataOn,
      // other processes on the machine skew timings: recorded so a reader can tell
      loadAvg1m: { start: loadStart, end: require('node:os').loadavg()[0] }
    },
    durationSec: Math.round((Date.now() - started) / 1000),
    ...out
  }
  const file = writeResult(resultsDir(opts.smoke, opts.engine), name, data)
  slog(`wrote ${path.relative(process.cwd(), file)} (${data.durationSec} s)`)
  for (const g of data.goals || []) {
    const mark = g.pass === null || g.pass === undefined ? 'N/A ' : g.pass ? 'PASS' : 'MISS'
    slog(`  ${mark}  ${g.label}: ${g.actual} (goal ${g.target})`)
  }
}

/** Parent: one child process per scenario, then docs + chart. */
async function runAll (opts) {
  const names = opts.only || SCENARIOS
  const started = Date.now()
  const runId = `${started}-${process.pid}`
  const failed = []
  for (const name of names) {
    if (opts.waitIdle) await waitIdle()
    log(`── ${name} on ${opts.engine}${opts.smoke ? ' (smoke)' : ''}`)
    const args = ['--child', name, '--engine', opts.engine]
    if (opts.smoke) args.push('--smoke')
    if (!opts.indexFix) args.push('--no-index-fix')
    if (opts.serverDisk) args.push('--server-disk')
    const code = await new Promise((resolve) => {
      const child = fork(__filename, args, {
        stdio: 'inherit',
        execArgv: ['--expose-gc', '--max-old-space-size=4096'],
        env: { ...process.env, BENCH_RUN_ID: runId, DUALSYNC_TESTBED: opts.engine }
      })
      child.on('exit', (c, sig) => resolve(sig ? 128 : c))
    })
    if (code !== 0) {
      log(`${name} FAILED (exit ${code})`)
      failed.push(name)
    }
  }
  const dir = resultsDir(opts.smoke, opts.engine)
  const results = readResults(dir, SCENARIOS)
  const { renderMarkdown, updatePerformanceDoc } = require('./lib/report')
  const md = renderMarkdown(results, { smoke: opts.smoke, engine: opts.engine })
  if (opts.smoke) {
    require('node:fs').mkdirSync(dir, { recursive: true })
    require('node:fs').writeFileSync(path.join(dir, 'RESULTS.md'), md)
    log(`smoke: table in ${path.relative(process.cwd(), path.join(dir, 'RESULTS.md'))} (docs/PERFORMANCE.md keeps the full run's numbers)`)
  } else {
    updatePerformanceDoc(md, opts.engine)
    log(`updated docs/PERFORMANCE.md (${opts.engine} results)`)
  }
  try {
    const { renderChart } = require('./lib/chart')
    const png = await renderChart(results, path.join(dir, 'summary.png'), { smoke: opts.smoke, engine: opts.engine })
    log(`chart: ${path.relative(process.cwd(), png)}`)
  } catch (e) {
    log(`chart not rendered: ${e.message}`)
  }
  log(`done in ${Math.round((Date.now() - started) / 1000)} s${failed.length ? `; failed: ${failed.join(', ')}` : ''}`)
  return failed.length ? 1 : 0
}

if (require.main === module) {
  let opts
  try {
    opts = parseArgs(process.argv.slice(2))
  } catch (e) {
    process.stderr.write(`${e.message}\n`)
    process.exit(2)
  }
  if (opts.help) {
    process.stdout.write(`${USAGE}\n`)
    process.exit(0)
  }
  const main = opts.child ? runChild(opts.child, opts).then(() => 0) : runAll(opts)
  main.then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`[bench] ${e && e.stack ? e.stack : e}\n`)
      process.exit(1)
    }
  )
}

module.exports = { SCENARIOS, ENGINES, parseArgs }
