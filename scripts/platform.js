'use strict'
// Which native binary fits this process: the napi-rs style platform names
// (e.g. linux-x64-gnu) that native.js looks for, as a local
// `dualsync.<name>.node` file and as the `dualsync-<name>` package.

/**
 * The prebuilt binaries this release ships, one npm package each under npm/
 * (listed as optionalDependencies of the main package).
 */
const PREBUILT = ['linux-x64-gnu', 'linux-arm64-gnu', 'win32-x64-gnu']

/** @returns {'gnu'|'musl'} the C library of this Linux process */
function linuxLibc () {
  const report = process.report && process.report.getReport()
  const header = report && (typeof report === 'string' ? JSON.parse(report) : report).header
  return header && header.glibcVersionRuntime ? 'gnu' : 'musl'
}

/**
 * The platform name of a binary built on this machine (scripts/install.js
 * names its cargo build this way).
 * @returns {string}
 */
function platformArchABI () {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${linuxLibc()}`
  // Our Windows binary is built with the GNU toolchain; with napi's dynamic
  // symbol loading it works in the (MSVC-built) node.exe and in Electron.
  if (platform === 'win32') return `win32-${arch}-gnu`
  return `${platform}-${arch}`
}

/**
 * Names native.js tries, best first: this machine's own name, then (Windows)
 * a binary built with the MSVC toolchain, e.g. by a developer's `npm run build`.
 * @returns {string[]}
 */
function candidates () {
  const own = platformArchABI()
  return process.platform === 'win32' ? [own, `win32-${process.arch}-msvc`] : [own]
}

module.exports = { PREBUILT, platformArchABI, candidates }
