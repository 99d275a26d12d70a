// Convergence with transactions, as a property: random sequences of plain writes and of
// transactions (connection.transaction() with the transaction AsyncLocalStorage, so every write
// path of helpers/writeops.js runs inside it unchanged) that commit, or abort (the function throws,
// or a write in it fails). After each sequence and flush(), Atlas must equal local byte for byte.
// Runs where the local server has transactions; elsewhere a test asserts the refusal.
//   DUALSYNC_TXN_PROPERTY_RUNS (default 30; the machine's load sets how long a run takes), DUALSYNC_PROPERTY_SEED to replay a failure.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import fc from 'fast-check'
import { useServers } from './helpers/servers.js'
import { startSyncEnv, MONGOOSE_VERSIONS } from './helpers/syncenv.js'
import { defineOpModels, opArb, runOps, resetOpCollections, OP_COLLECTIONS } from './helpers/writeops.js'

const require = createRequire(import.meta.url)
const { probeTransactions } = require('./helpers/capabilities.js')

const RUNS = Number(process.env.DUALSYNC_TXN_PROPERTY_RUNS || 30)
const SEED = process.env.DUALSYNC_PROPERTY_SEED ? Number(process.env.DUALSYNC_PROPERTY_SEED) : undefined

const servers = await useServers()
const txn = await probeTransactions(servers.local.uri)

describe('transaction capability of the local test server (property)', () => {
  it.runIf(!txn.supported)(`refuses transactions, so the property does not run (${txn.reason})`, () => {
    expect(txn.supported).toBe(false)
  })
})

// One write inside a transaction: no mid-sequence flush (it would wait for the commit) and no
// concurrent writes (a session carries one command at a time).
const txnWriteArb = opArb.filter((op) => op.kind !== 'flush' && op.kind !== 'parallel')
const stepArb = fc.oneof(
  { arbitrary: opArb.map((op) => ({ kind: 'plain', op })), weight: 2 },
  {
    arbitrary: fc.record({
      ops: fc.array(txnWriteArb, { minLength: 1, maxLength: 6 }),
      commit: fc.boolean()
    }).map((t) => ({ kind: 'transaction', ...t })),
    weight: 3
  }
)

class Abort extends Error {}

describe.runIf(txn.supported).each(MONGOOSE_VERSIONS)('convergence property with transactions (%s)', (label, lib) => {
  let env
  const stats = { ok: new Map(), expectedErrors: new Map() }
  const outcomes = { committed: 0, aborted: 0, failed: 0, serverAborted: 0 }

  beforeAll(async () => {
    env = await startSyncEnv(servers, {
      lib,
      prefix: `txnprop_${label.replace(/\W/g, '')}`,
      defineModels: (m) => {
        m.set('transactionAsyncLocalStorage', true)
        return defineOpModels(m)
      }
    })
  })
  afterAll(async () => {
    await env?.close()
  })

  async function runTransaction (step) {
    try {
      await env.m.connection.transaction(async () => {
        for (const op of step.ops) {
          const before = [...stats.expectedErrors.values()].reduce((a, b) => a + b, 0)
          await runOps(env, [op], stats)
          // A write that failed (duplicate key...) leaves the server's transaction aborted.
          if ([...stats.expectedErrors.values()].reduce((a, b) => a + b, 0) > before) throw new Abort('a write failed')
        }
        if (!step.commit) throw new Abort('the app aborts')
      })
      outcomes.committed++
    } catch (err) {
      if (err instanceof Abort) {
        outcomes[err.message === 'a write failed' ? 'failed' : 'aborted']++
      } else if (err.code === 251) {
        // NoSuchTransaction: the server dropped the transaction (the DocumentDB gateway does so
        // for some of these sequences, with or without dualsync). The app sees the failure;
        // Atlas must still end up equal to whatever local kept.
        outcomes.serverAborted++
      } else {
        throw err
      }
    }
  }

  it(`random sequences of writes and transactions leave Atlas equal to local (${RUNS} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 8 }), async (steps) => {
        await resetOpCollections(env)
        for (const step of steps) {
          if (step.kind === 'plain') await runOps(env, [step.op], stats)
          else await runTransaction(step)
        }
        await env.converge(OP_COLLECTIONS)
      }),
      { numRuns: RUNS, seed: SEED }
    )
    console.log(`[transactions property] ${label}: ${RUNS} runs, transactions ${JSON.stringify(outcomes)}`)
    expect(outcomes.committed).toBeGreaterThan(0)
    expect(outcomes.aborted).toBeGreaterThan(0)
    expect(env.sync.metrics().hookErrors).toBe(0)
  }, 600_000)
})
