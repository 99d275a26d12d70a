'use strict'
// Loads the native addon. Order: NAPI_RS_NATIVE_LIBRARY_PATH (an explicit
// file), a `dualsync.<platform>.node` next to this file (a developer's
// `npm run build`, or the cargo build of scripts/install.js), then the
// prebuilt package `dualsync-<platform>` that npm installed from our
// optionalDependencies. Anything else fails with ERR_SYNC_NO_BINARY and
// says what was tried and how to get a binary.

const path = require('node:path')
const { PREBUILT, candidates } = require('./scripts/platform')
const { version } = require('./package.json')

function describePlatform () {
  return `${process.platform}-${process.arch} (Node ${process.version}, ABI ${process.versions.napi ? `N-API ${process.versions.napi}` : 'unknown'})`
}

function load () {
  const tried = []
  const attempt = (what, fn) => {
    try {
      return fn()
    } catch (e) {
      const missing = e && e.code === 'MODULE_NOT_FOUND' && String(e.message).includes(what)
      tried.push(`${what}: ${missing ? 'not installed' : (e && e.message) || e}`)
      return null
    }
  }
  const override = process.env.NAPI_RS_NATIVE_LIBRARY_PATH
  if (override) {
    const b = attempt(override, () => require(override))
    if (b) return b
  }
  for (const name of candidates()) {
    const file = path.join(__dirname, `dualsync.${name}.node`)
    const local = attempt(file, () => require(file))
    if (local) return local
    const pkg = `dualsync-${name}`
    const binding = attempt(pkg, () => {
      const got = require(`${pkg}/package.json`).version
      if (got !== version) {
        throw new Error(`version ${got} is installed but dualsync ${version} needs the same version; reinstall dualsync`)
      }
      return require(pkg)
    })
    if (binding) return binding
  }
  const prebuilt = candidates().some((c) => PREBUILT.includes(c))
  const hint = prebuilt
    ? `npm should have installed the optional dependency dualsync-${candidates()[0]}: check that optional dependencies are not disabled (--omit=optional, --no-optional) and reinstall dualsync`
    : `no prebuilt binary exists for this platform (prebuilt: ${PREBUILT.join(', ')}); install a Rust toolchain (https://rustup.rs) and reinstall dualsync without --ignore-scripts so it builds from source`
  const err = new Error(`dualsync: no native binary loads on ${describePlatform()}: ${hint}. Tried:\n  ${tried.join('\n  ')}`)
  err.code = 'ERR_SYNC_NO_BINARY'
  throw err
}

module.exports = load()
