#!/usr/bin/env node
'use strict'
// Builds the prebuilt native binaries (one per npm/<platform> package) on a
// Linux x64 host: win32-x64-gnu with MinGW, linux-arm64-gnu with
// cargo-zigbuild against glibc 2.17, linux-x64-gnu from `npm run build`.
//   node scripts/cross.js [platform...]     (default: all of PREBUILT)
//   node scripts/cross.js --clippy win32-x64-gnu   (clippy -D warnings for that target: the
//                                                  Windows-only code in crates/core/src/platform.rs)
// Tools it needs and does not install itself are named with the command to run.
// Build outputs go to a target dir under ~/.cache/dualsync (kept between CI
// runs, so a fresh clone only recompiles the workspace crates).

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { PREBUILT } = require('./platform')

const root = path.join(__dirname, '..')
const cache = path.join(os.homedir(), '.cache', 'dualsync')
const tools = path.join(cache, 'tools')
const PY_TOOLS = path.join(tools, 'py')
// Pinned: a new zig or cargo-zigbuild must be a reviewed change.
const PIP_PACKAGES = ['ziglang==0.15.1', 'cargo-zigbuild==0.20.1']
const TARGET_DIR = process.env.DUALSYNC_CROSS_TARGET_DIR || path.join(cache, 'target-platforms')
// The shipped binaries use the release profile (Cargo.toml).
const PROFILE = process.env.DUALSYNC_CROSS_PROFILE || 'release'

/** Rust target and how to build it, per platform package. */
const TARGETS = {
  'win32-x64-gnu': {
    rust: 'x86_64-pc-windows-gnu',
    artifact: 'dualsync.dll',
    debs: ['gcc-mingw-w64-x86-64'],
    env: () => ({
      CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER: 'x86_64-w64-mingw32-gcc',
      // napi-build insists on a libnode.dll for windows-gnu; napi loads Node's
      // symbols at run time, so an empty import library satisfies the link
      // (pack-platforms checks the .node imports nothing from it).
      LIBNODE_PATH: libnodeStub()
    }),
    cargo: ['build']
  },
  'linux-arm64-gnu': {
    rust: 'aarch64-unknown-linux-gnu',
    // The ".2.17" suffix makes zig link against glibc 2.17 (Raspberry Pi OS
    // and other old images load it).
    cargoTarget: 'aarch64-unknown-linux-gnu.2.17',
    artifact: 'libdualsync.so',
    debs: [],
    env: () => ({ PATH: `${path.join(PY_TOOLS, 'bin')}${path.delimiter}${path.join(PY_TOOLS, 'ziglang')}${path.delimiter}${process.env.PATH}` }),
    cargo: ['zigbuild'],
    pip: true
  }
}

function run (cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts })
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status}`)
}

function libnodeStub () {
  const dir = path.join(tools, 'libnode-stub')
  if (!fs.existsSync(path.join(dir, 'libnode.dll.a'))) {
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(dir, 'libnode.dll'), '')
    run('x86_64-w64-mingw32-ar', ['rcs', path.join(dir, 'libnode.dll.a')])
  }
  return dir
}

function missingDebs (debs) {
  return debs.filter((p) => spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout.indexOf('install ok installed') === -1)
}

/** Installs (or names) what building `name` needs: rustup target, pip tools. */
function ensureTools (name) {
  const t = TARGETS[name]
  const debs = missingDebs(t.debs)
  if (debs.length) {
    throw new Error(`building ${name} needs Debian packages: apt-get install -y --no-install-recommends ${debs.join(' ')}`)
  }
  const installed = spawnSync('rustup', ['target', 'list', '--installed'], { encoding: 'utf8' })
  if (installed.error) throw new Error(`building ${name} needs rustup (https://rustup.rs), then: rustup target add ${t.rust}`)
  if (!installed.stdout.split('\n').includes(t.rust)) run('rustup', ['target', 'add', t.rust])
  if (t.pip && !fs.existsSync(path.join(PY_TOOLS, 'bin', 'cargo-zigbuild'))) {
    run('python3', ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--target', PY_TOOLS, ...PIP_PACKAGES])
  }
}

/**
 * Builds one platform's binary into npm/<name>/dualsync.<name>.node.
 * @param {string} name a PREBUILT platform name
 * @returns {string} the .node path
 */
function build (name) {
  const out = path.join(root, 'npm', name, `dualsync.${name}.node`)
  if (name === 'linux-x64-gnu') {
    // The host build (`npm run build`) is the linux-x64 binary.
    const built = path.join(root, `dualsync.${name}.node`)
    if (!fs.existsSync(built)) throw new Error(`${built} is missing: run npm run build first`)
    fs.copyFileSync(built, out)
    return out
  }
  const t = TARGETS[name]
  if (!t) throw new Error(`unknown platform "${name}" (expected one of ${PREBUILT.join(', ')})`)
  ensureTools(name)
  const started = Date.now()
  run('cargo', [...t.cargo, '--locked', '-p', 'dualsync', '--profile', PROFILE, '--target', t.cargoTarget || t.rust], {
    cwd: root,
    env: { ...process.env, ...t.env(), CARGO_TARGET_DIR: TARGET_DIR }
  })
  const dir = PROFILE === 'dev' ? 'debug' : PROFILE
  fs.copyFileSync(path.join(TARGET_DIR, t.rust, dir, t.artifact), out)
  console.log(`cross: ${name} built in ${Math.round((Date.now() - started) / 1000)} s -> ${path.relative(root, out)}`)
  return out
}

/** `cargo clippy -D warnings` of the workspace for a cross target (no build). */
function clippy (name) {
  const t = TARGETS[name]
  if (!t) throw new Error(`unknown cross platform "${name}" (expected one of ${Object.keys(TARGETS).join(', ')})`)
  ensureTools(name)
  run('cargo', [...t.cargo.map((c) => (c === 'build' ? 'clippy' : c)), '--locked', '--workspace', '--target', t.rust, '--', '-D', 'warnings'], {
    cwd: root,
    env: { ...process.env, ...t.env(), CARGO_TARGET_DIR: TARGET_DIR }
  })
}

module.exports = { build, clippy, TARGETS, TARGET_DIR }

if (require.main === module) {
  const args = process.argv.slice(2)
  const lint = args[0] === '--clippy'
  const names = lint ? args.slice(1) : args
  try {
    for (const n of names.length ? names : PREBUILT) lint ? clippy(n) : build(n)
  } catch (e) {
    console.error(`cross: ${e.message}`)
    process.exitCode = 1
  }
}
