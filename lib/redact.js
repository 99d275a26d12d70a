'use strict'
/**
 * Credential redaction for everything we log, return or throw. The rules live
 * in the core (crates/core/src/redact.rs) so JS and Rust mask the same way;
 * this module only forwards to the binding.
 */

let native = null
function binding () {
  if (!native) native = require('../native.js')
  return native
}

/**
 * Replaces the user:password part of a MongoDB URI with ***:***.
 * @param {string} uri
 * @returns {string}
 */
function redactUri (uri) {
  if (typeof uri !== 'string') return uri
  return binding().redactUri(uri)
}

/**
 * Removes credentials of the given URIs (raw and percent-decoded; short
 * passwords only where they stand as `user:password`) and any URI-looking
 * userinfo from text.
 * @param {string} text
 * @param {string[]} [uris]
 * @returns {string}
 */
function scrub (text, uris = []) {
  const list = Array.isArray(uris) ? uris.filter((u) => typeof u === 'string' && u !== '') : []
  return binding().scrubSecrets(String(text), list)
}

module.exports = { redactUri, scrub }
