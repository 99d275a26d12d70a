'use strict'
// The café's data: the collections the owners want in Atlas.

/**
 * Compiles the café models on a Mongoose instance (after the sync plugin).
 * @param {import('mongoose').Mongoose} mongoose
 */
function defineModels (mongoose) {
  const { Schema } = mongoose
  const MenuItem = mongoose.model('MenuItem', new Schema({ name: String, price: Number, available: { type: Boolean, default: true } }))
  const User = mongoose.model('User', new Schema({ name: String, role: String, pin: { type: String, select: false } }, { timestamps: true }))
  const Session = mongoose.model('Session', new Schema({ table: Number, openedBy: { type: Schema.Types.ObjectId, ref: 'User' }, guests: Number, open: { type: Boolean, default: true } }, { timestamps: true }))
  const Order = mongoose.model('Order', new Schema({
    session: { type: Schema.Types.ObjectId, ref: 'Session' },
    items: [{ item: { type: Schema.Types.ObjectId, ref: 'MenuItem' }, qty: Number }],
    status: { type: String, default: 'new' },
    notes: [String]
  }, { timestamps: true }))
  const Bill = mongoose.model('Bill', new Schema({
    session: { type: Schema.Types.ObjectId, ref: 'Session' },
    total: { type: Number, default: 0 },
    tips: { type: Number, default: 0 },
    paid: { type: Boolean, default: false },
    payments: [{ method: String, amount: Number }]
  }, { timestamps: true }))
  return { MenuItem, User, Session, Order, Bill }
}

module.exports = { defineModels }
