// Which `_id`s a filter names, without a server (lib/plugin/resolve.js prepareFilter): ObjectIds
// for a plain ObjectId `_id` are kept as they are (Mongoose's cast would return them unchanged,
// and it is the costliest part of the hook); an `_id` with a setter of the app's, a hex string or
// a mix goes through Mongoose's cast, as the write itself will. On Mongoose 9 and 8.
import { describe, it, expect } from 'vitest'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { prepareFilter } = require('../lib/plugin/resolve.js')

const VERSIONS = [
  ['mongoose 9', require('mongoose')],
  ['mongoose 8', require('mongoose8')]
]

describe.each(VERSIONS)('prepareFilter on %s', (label, mongoose) => {
  const tag = label.replace(/\W/g, '')
  const Plain = mongoose.model(`ResolvePlain${tag}`, new mongoose.Schema({ n: Number }))
  let setterCalls = 0
  const WithSetter = mongoose.model(`ResolveSetter${tag}`, new mongoose.Schema({
    _id: { type: mongoose.Schema.Types.ObjectId, set: (v) => { setterCalls++; return v } },
    n: Number
  }))
  const ids = (Model, filter) => prepareFilter({ model: Model, query: Model.find(), filter, cap: 100 }).ids

  it('keeps ObjectIds of a plain ObjectId _id as they are', () => {
    const a = new mongoose.Types.ObjectId()
    const b = new mongoose.Types.ObjectId()
    const [x, y] = ids(Plain, { _id: { $in: [a, b] } })
    expect(x).toBe(a)
    expect(y).toBe(b)
  })

  it('casts when the _id has a setter of the app, a hex string, or a mix', () => {
    const a = new mongoose.Types.ObjectId()
    setterCalls = 0
    expect(String(ids(WithSetter, { _id: a })[0])).toBe(String(a))
    expect(setterCalls).toBe(1)
    const hex = ids(Plain, { _id: a.toHexString() })[0]
    expect(hex).not.toBe(a.toHexString())
    expect(String(hex)).toBe(a.toHexString())
    const mixed = ids(Plain, { _id: { $in: [a, new mongoose.Types.ObjectId().toHexString()] } })
    expect(mixed.every((id) => id._bsontype === 'ObjectId')).toBe(true)
  })

  it('a value that does not cast is a castError, not a throw', () => {
    expect(prepareFilter({ model: Plain, query: Plain.find(), filter: { _id: 'not-an-id' }, cap: 100 }).castError).toBeInstanceOf(Error)
  })
})
