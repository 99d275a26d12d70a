#!/usr/bin/env node
'use strict'
// postinstall: use the prebuilt binary (the dualsync-<platform> optional
// dependency) when it loads; otherwise build the addon from source with cargo
// (a platform with no prebuilt binary). With --ignore-scripts this never runs,
// which is fine wherever a prebuilt binary exists.
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')

// In this process, not a child: under an emulator (qemu-user) or a sandbox
// this Node may not be able to start another. A failed require is not cached,
// so the check after the build loads afresh.
function loads () {
  try {
    require(path.join(root, 'native.js'))
    return true
  } catch {
    return false
  }
}

// The cargo build on Windows uses the host toolchain's ABI (msvc or gnu).
function builtName () {
  const { platformArchABI } = require('./platform')
  if (process.platform !== 'win32') return platformArchABI()
  const host = spawnSync('rustc', ['-vV'], { encoding: 'utf8' }).stdout || ''
  return `win32-${process.arch}-${host.includes('-msvc') ? 'msvc' : 'gnu'}`
}

function main () {
  if (process.env.DUALSYNC_SKIP_INSTALL === '1' || loads()) return 0
  // In a git checkout the developer builds with `npm run build`.
  if (fs.existsSync(path.join(root, '.git'))) return 0
  console.log('dualsync: no prebuilt binary for this platform; building the native addon with cargo (a few minutes)…')
  const cargo = spawnSync('cargo', ['build', '--release', '--locked', '-p', 'dualsync'], { cwd: root, stdio: 'inherit' })
  if (cargo.error || cargo.status !== 0) {
    console.error('dualsync: building from source failed. Install a Rust toolchain (https://rustup.rs) and reinstall, or use a platform with a prebuilt binary.')
    return 1
  }
  const built = path.join(root, 'target', 'release', process.platform === 'darwin' ? 'libdualsync.dylib' : process.platform === 'win32' ? 'dualsync.dll' : 'libdualsync.so')
  fs.copyFileSync(built, path.join(root, `dualsync.${builtName()}.node`))
  if (!loads()) {
    console.error('dualsync: the addon built but does not load; please report this with your platform details.')
    return 1
  }
  return 0
}

process.exitCode = main()
