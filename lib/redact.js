'use strict'
/** Credential redaction for everything we log, return or throw. */

/**
 * Replaces the user:password part of a MongoDB URI with ***:***.
 * @param {string} uri
 * @returns {string}
 */
function redactUri (uri) {
  if (typeof uri !== 'string') return uri
  return uri.replace(/([a-z][a-z0-9+.-]*:\/\/)([^@/?\s]+)@/gi, '$1***:***@')
}

/**
 * Removes credentials of the given URIs (and any URI-looking userinfo) from text.
 * @param {string} text
 * @param {string[]} [uris]
 * @returns {string}
 */
function scrub (text, uris = []) {
  let out = redactUri(String(text))
  for (const u of uris) {
    if (typeof u !== 'string') continue
    const m = /^mongodb(?:\+srv)?:\/\/([^@/?]+)@/.exec(u)
    if (!m) continue
    const [user, pass] = m[1].split(':')
    for (const secret of [pass, pass && decodeURIComponent(pass)]) {
      if (secret && secret.length >= 3) out = out.split(secret).join('***')
    }
    if (user && user.length >= 3) out = out.split(`${user}:`).join('***:')
  }
  return out
}

module.exports = { redactUri, scrub }
