#!/usr/bin/env node
'use strict'
// `npm run pack:platforms`: the main tarball plus one tarball per prebuilt
// platform (npm/<platform>), napi-rs style. The main package lists the
// platform packages as optionalDependencies (added here, at pack time, so a
// developer's `npm ci` never looks them up in the registry) and ships no
// binary itself. Each binary is checked before it is packed: the Windows one
// must not import libnode.dll, the Linux ones must not need a newer glibc
// than their stated floor.
//   node scripts/pack-platforms.js [--dest DIR] [--no-build] [platform...]

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { PREBUILT } = require('./platform')

const root = path.join(__dirname, '..')

/** Highest glibc version each Linux binary may need (docs state the same). */
const GLIBC_FLOOR = { 'linux-arm64-gnu': '2.17', 'linux-x64-gnu': '2.34' }

function versionKey (v) {
  const [a = 0, b = 0, c = 0] = v.split('.').map(Number)
  return (a * 1000 + b) * 1000 + c
}

/**
 * Checks one binary for what would stop it loading on its platform.
 * @param {string} name platform name
 * @param {string} file the .node
 * @returns {string} a one-line description (e.g. "needs glibc 2.17")
 */
function checkBinary (name, file) {
  if (name.startsWith('win32-')) {
    const dump = execFileSync('x86_64-w64-mingw32-objdump', ['-p', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
    const dlls = [...new Set([...dump.matchAll(/DLL Name: (\S+)/g)].map((m) => m[1].toLowerCase()))]
    if (dlls.some((d) => /^(lib)?node\.(dll|exe)$/i.test(d))) {
      throw new Error(`${file} imports ${dlls.join(', ')}: it must load Node's functions at run time, not link libnode`)
    }
    return `imports ${dlls.join(', ')}`
  }
  const dump = execFileSync('readelf', ['-V', '-W', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
  const versions = [...dump.matchAll(/GLIBC_(\d+(?:\.\d+)+)/g)].map((m) => m[1])
  const max = versions.sort((a, b) => versionKey(a) - versionKey(b)).pop() || 'none'
  const floor = GLIBC_FLOOR[name]
  if (floor && max !== 'none' && versionKey(max) > versionKey(floor)) {
    throw new Error(`${file} needs glibc ${max}, above the stated floor ${floor}`)
  }
  return `needs glibc ${max} (floor ${floor})`
}

function npmPack (dir, dest) {
  const out = execFileSync('npm', ['pack', '--silent', '--pack-destination', dest], { cwd: dir, encoding: 'utf8' })
  return path.join(dest, out.trim().split('\n').pop())
}

/** The main package, staged with optionalDependencies on the platform packages. */
function packMain (dest) {
  const list = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--silent', '--ignore-scripts'], { cwd: root, encoding: 'utf8' }))
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'dualsync-stage-'))
  try {
    for (const { path: rel } of list[0].files) {
      if (rel.endsWith('.node')) continue // binaries ship in the platform packages
      fs.mkdirSync(path.dirname(path.join(stage, rel)), { recursive: true })
      fs.copyFileSync(path.join(root, rel), path.join(stage, rel))
    }
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
    pkg.optionalDependencies = Object.fromEntries(PREBUILT.map((p) => [`dualsync-${p}`, pkg.version]))
    delete pkg.devDependencies
    fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify(pkg, null, 2) + '\n')
    return npmPack(stage, dest)
  } finally {
    fs.rmSync(stage, { recursive: true, force: true })
  }
}

/**
 * Packs the main package and the given platform packages into `dest`.
 * @param {{dest: string, platforms?: string[], build?: boolean}} opts
 * @returns {{main: string, platforms: Record<string, string>}} tarball paths
 */
function pack ({ dest, platforms = PREBUILT, build = true }) {
  fs.mkdirSync(dest, { recursive: true })
  const out = { main: packMain(dest), platforms: {} }
  for (const name of platforms) {
    if (!PREBUILT.includes(name)) throw new Error(`unknown platform "${name}" (expected one of ${PREBUILT.join(', ')})`)
    const file = path.join(root, 'npm', name, `dualsync.${name}.node`)
    if (build || !fs.existsSync(file)) require('./cross').build(name)
    console.log(`pack: ${name}: ${checkBinary(name, file)}`)
    out.platforms[name] = npmPack(path.join(root, 'npm', name), dest)
  }
  return out
}

module.exports = { pack, checkBinary, GLIBC_FLOOR }

if (require.main === module) {
  const args = process.argv.slice(2)
  const at = args.indexOf('--dest')
  const dest = path.resolve(at === -1 ? path.join(root, 'dist') : args.splice(at, 2)[1])
  const build = !args.includes('--no-build')
  const platforms = args.filter((a) => !a.startsWith('--'))
  try {
    const out = pack({ dest, build, platforms: platforms.length ? platforms : PREBUILT })
    console.log([out.main, ...Object.values(out.platforms)].map((f) => path.relative(process.cwd(), f)).join('\n'))
  } catch (e) {
    console.error(`pack:platforms: ${e.message}`)
    process.exitCode = 1
  }
}
