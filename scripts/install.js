#!/usr/bin/env node
'use strict'
// postinstall: use the bundled native binary when it loads; otherwise build
// the addon from source with cargo (a platform with no prebuilt binary).
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')

function loads () {
  const r = spawnSync(process.execPath, ['-e', "require('./native.js')"], { cwd: root, stdio: 'ignore' })
  return r.status === 0
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
  const { platformArchABI } = require('./platform')
  fs.copyFileSync(built, path.join(root, `dualsync.${platformArchABI()}.node`))
  if (!loads()) {
    console.error('dualsync: the addon built but does not load; please report this with your platform details.')
    return 1
  }
  return 0
}

process.exitCode = main()
