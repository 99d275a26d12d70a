// Values FerretDB v1 refuses — Decimal128, nested arrays, keys with dots, keys with a leading `$`
// in embedded documents — reach Atlas byte for byte through the Mongoose write paths that carry
// them, inside a transaction too where the server has them. Each shape runs where both servers of
// the pair store it unchanged (a probe in helpers/capabilities.js); elsewhere a test asserts the
// refusal and names it.
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createRequire } from 'node:module'
import { useServers } from './helpers/servers.js'
import { startSyncEnv, MONGOOSE_VERSIONS } from './helpers/syncenv.js'

const require = createRequire(import.meta.url)
const { probeValues, probeTransactions, VALUE_SHAPES } = require('./helpers/capabilities.js')

const ROUNDS = Number(process.env.DUALSYNC_VALUE_ROUNDS || 5)

const servers = await useServers()
const [onLocal, onAtlas] = await Promise.all([probeValues(servers.local.uri), probeValues(servers.atlas.uri)])
const txn = await probeTransactions(servers.local.uri)
const SHAPES = Object.keys(VALUE_SHAPES)
const usable = (name) => onLocal[name].supported && onAtlas[name].supported
const why = (name) => (onLocal[name].supported ? `Atlas server: ${onAtlas[name].reason}` : `local server: ${onLocal[name].reason}`)
for (const name of SHAPES.filter((n) => !usable(n))) {
  console.warn(`values.test.js: ${name} does not run on this test bed (${why(name)})`)
}

describe('value shapes the test servers store', () => {
  for (const name of SHAPES) {
    it.runIf(!usable(name))(`${name}: refused, so its round trip does not run (${why(name)})`, () => {
      expect(usable(name)).toBe(false)
      expect(why(name)).toMatch(/refused|different/)
    })
    it.runIf(usable(name))(`${name}: stored unchanged by both servers`, () => {
      expect(onLocal[name].reason).toMatch(/byte for byte/)
    })
  }
})

describe.each(MONGOOSE_VERSIONS)('values reach Atlas byte for byte (%s)', (label, lib) => {
  let env, Value
  beforeAll(async () => {
    env = await startSyncEnv(servers, {
      lib,
      prefix: `val_${label.replace(/\W/g, '')}`,
      // strict: false keeps every field as written (no schema casting in the way of the shapes).
      defineModels: (m) => ({ Value: m.model('Value', new m.Schema({ round: Number }, { strict: false }), 'values') })
    })
    Value = env.models.Value
  })
  afterAll(async () => {
    await env?.close()
  })

  for (const name of SHAPES) {
    it.runIf(usable(name))(`${name}: create, insertMany, bulkWrite, replaceOne, $set${txn.supported ? ', in a transaction' : ''} (${ROUNDS} rounds)`, async () => {
      const make = () => VALUE_SHAPES[name](lib.mongo)
      for (let round = 1; round <= ROUNDS; round++) {
        const created = await Value.create({ shape: name, round, ...make() })
        const [inserted] = await Value.insertMany([{ shape: name, round, ...make() }])
        await Value.bulkWrite([{ insertOne: { document: { shape: name, round, ...make() } } }])
        await Value.replaceOne({ _id: inserted._id }, { shape: name, round, replaced: true, ...make() })
        await Value.updateOne({ _id: created._id }, { $set: { copy: make() }, $inc: { round: 1 } })
        if (txn.supported) {
          const session = await env.m.startSession()
          await session.withTransaction(async () => {
            await Value.create([{ shape: name, round, inTransaction: true, ...make() }], { session })
            await Value.replaceOne({ _id: created._id }, { shape: name, round, inTransaction: true, ...make() }, { session })
          })
          await session.endSession()
        }
        await env.converge()
      }
      // The shape is really on Atlas (not dropped or rewritten on the way): same bytes as the
      // document the driver makes of it.
      const expected = lib.mongo.BSON.serialize({ ...make() })
      const stored = await env.atlas.collection('values').findOne({ shape: name, replaced: true }, { projection: { _id: 0, __v: 0, shape: 0, round: 0, replaced: 0 }, raw: true })
      expect(Buffer.from(stored).equals(Buffer.from(expected))).toBe(true)
      expect(await env.atlas.collection('values').countDocuments({ shape: name })).toBe(ROUNDS * (txn.supported ? 4 : 3))
    })
  }
})
