'use strict'
// The napi-rs platform triple of this process (e.g. linux-x64-gnu), matching
// the file names native.js looks for.

/** @returns {string} */
function platformArchABI () {
  const { platform, arch } = process
  if (platform === 'linux') {
    const glibc = process.report && process.report.getReport().header.glibcVersionRuntime
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

module.exports = { platformArchABI }
