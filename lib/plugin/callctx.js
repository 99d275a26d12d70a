'use strict'
// Per-call state for Model.insertMany / Model.bulkWrite.
//
// Their pre hooks see the call's arguments but their post hooks only see the result, and `this`
// is the (shared) model, so the `_id`s found before the write cannot ride on `this` as they do
// for queries and documents. An AsyncLocalStorage store carries them from pre to post instead:
// - Mongoose 9 traces these calls on diagnostics_channel (`mongoose:model:insertMany|bulkWrite`).
//   Binding our store to the trace's start gives every call its own store for its whole
//   duration, exposes the call's options (Mongoose 9 passes insertMany pre hooks no options, so
//   `{sync: false}` is only visible here), and the trace's asyncEnd is a post hook that always
//   runs (Mongoose 9 skips insertMany post hooks for `rawResult`/`populate`).
// - Mongoose 8 has no such trace: a first pre hook enters a fresh store synchronously, inside the
//   call's synchronous start, so the call's continuation (and its post hooks) inherit it.

const { AsyncLocalStorage } = require('node:async_hooks')

const STATE = Symbol('dualsync.callState')
const TRACED_CALLS = ['mongoose:model:insertMany', 'mongoose:model:bulkWrite']

const als = new AsyncLocalStorage()
let tracingInstalled = false

/**
 * @typedef {object} CallHolder
 * @property {boolean} traced   created by Mongoose 9's trace (its asyncEnd finishes the call)
 * @property {boolean} claimed  a begin hook has taken it for this call
 * @property {object | undefined} options  the call's options, when traced
 * @property {Array<(result: any, error: any) => void>} finishers  run once the write is done
 * @property {Array<(result: any, error: any) => Promise<void>>} checks  run by the post (or
 *   error) middleware, awaited before the call returns (finishers come after); never throw
 */

function newHolder (traced, options) {
  return { traced, claimed: false, options, finishers: [], checks: [] }
}

async function runChecks (holder, result, error) {
  const checks = holder.checks
  holder.checks = []
  for (const check of checks) await check(result, error)
}

function runFinishers (holder, result, error) {
  const finishers = holder.finishers
  holder.finishers = [] // each runs once, and a store that outlives the call holds nothing
  for (const finish of finishers) finish(result, error)
}

/** Subscribes to Mongoose 9's traces once per process (a no-op where diagnostics_channel lacks them). */
function installTracing () {
  if (tracingInstalled) return
  tracingInstalled = true
  let dc
  try {
    dc = require('node:diagnostics_channel')
  } catch {
    return
  }
  if (typeof dc.tracingChannel !== 'function') return
  for (const name of TRACED_CALLS) {
    const ch = dc.tracingChannel(name)
    if (!ch.start || typeof ch.start.bindStore !== 'function') continue
    ch.start.bindStore(als, (ctx) => {
      const holder = newHolder(true, ctx && ctx.args ? ctx.args.options : undefined)
      if (ctx && typeof ctx === 'object') ctx[STATE] = holder
      return holder
    })
    ch.asyncEnd.subscribe((ctx) => {
      const holder = ctx && ctx[STATE]
      if (holder) runFinishers(holder, ctx.result, ctx.error)
    })
  }
}

/**
 * First pre hook of insertMany/bulkWrite (registered with unshift, synchronous, no parameters):
 * claims the traced store of this call, or enters a fresh one (Mongoose 8).
 */
function dualsyncBeginCall () {
  const cur = als.getStore()
  if (cur && cur.traced && !cur.claimed) {
    cur.claimed = true
    return
  }
  const holder = newHolder(false, undefined)
  holder.claimed = true
  als.enterWith(holder)
}

/** @returns {CallHolder | undefined} the store of the insertMany/bulkWrite call running now */
function currentCall () {
  return als.getStore()
}

/**
 * Runs the call's checks (the app waits for them), then finishes an untraced (Mongoose 8) call;
 * traced calls are finished by the trace's asyncEnd instead, which comes after this middleware
 * and also covers the paths that skip middleware.
 */
async function finishFromMiddleware (result, error) {
  const holder = als.getStore()
  if (!holder) return
  await runChecks(holder, result, error)
  if (!holder.traced) runFinishers(holder, result, error)
}

/** Post middleware of insertMany/bulkWrite: finishes the call with its result. */
async function dualsyncFinishCall (result) {
  await finishFromMiddleware(result, null)
}

/** Error middleware of insertMany/bulkWrite: finishes the call with its error. */
async function dualsyncFailCall (error) {
  await finishFromMiddleware(null, error)
}

module.exports = { installTracing, dualsyncBeginCall, currentCall, dualsyncFinishCall, dualsyncFailCall }
