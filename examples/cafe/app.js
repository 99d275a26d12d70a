'use strict'
// The café server: Express + Mongoose, local MongoDB as the primary, with
// dualsync's plugin capturing every write and its admin router mounted.
const express = require('express')

/**
 * @param {{models: ReturnType<import('./models').defineModels>, sync: import('../..').Sync}} deps
 * @returns {import('express').Express}
 */
function createApp ({ models, sync }) {
  const { MenuItem, Session, Order, Bill } = models
  const app = express()
  app.use(express.json())
  const route = (fn) => (req, res) => fn(req, res).catch((e) => res.status(500).json({ error: e.message }))

  app.post('/sessions', route(async (req, res) => {
    const session = await Session.create({ table: req.body.table, guests: req.body.guests, openedBy: req.body.user })
    const bill = await Bill.create({ session: session._id })
    res.status(201).json({ session: session._id, bill: bill._id })
  }))

  app.post('/sessions/:id/orders', route(async (req, res) => {
    const menu = await MenuItem.find({ available: true }).lean()
    const picks = req.body.items.map((i) => ({ item: menu[i % menu.length]._id, qty: 1 + (i % 3) }))
    const order = await Order.create({ session: req.params.id, items: picks })
    const amount = picks.reduce((sum, p) => sum + p.qty * menu.find((m) => m._id.equals(p.item)).price, 0)
    // $inc on the bill: the old middleware silently dropped these.
    await Bill.updateOne({ session: req.params.id }, { $inc: { total: amount } })
    res.status(201).json({ order: order._id, amount })
  }))

  app.post('/orders/:id/serve', route(async (req, res) => {
    await Order.findByIdAndUpdate(req.params.id, { $set: { status: 'served' }, $push: { notes: `served at ${new Date().toISOString()}` } })
    res.json({ ok: true })
  }))

  app.post('/sessions/:id/pay', route(async (req, res) => {
    const bill = await Bill.findOne({ session: req.params.id })
    bill.payments.push({ method: req.body.method, amount: bill.total })
    bill.tips = req.body.tips
    bill.paid = true
    await bill.save()
    // updateMany: the old middleware applied it to one document only.
    await Order.updateMany({ session: req.params.id, status: { $ne: 'served' } }, { $set: { status: 'served' } })
    await Session.updateOne({ _id: req.params.id }, { $set: { open: false }, $unset: { guests: 1 } })
    res.json({ paid: bill.total })
  }))

  app.post('/menu/daily-special', route(async (req, res) => {
    // insertMany: never captured by the old middleware.
    const items = await MenuItem.insertMany(req.body.names.map((name, i) => ({ name, price: 3 + i })))
    res.status(201).json({ added: items.length })
  }))

  app.delete('/orders/cancelled', route(async (req, res) => {
    const r = await Order.deleteMany({ status: 'cancelled' })
    res.json({ deleted: r.deletedCount })
  }))

  app.post('/orders/:id/cancel', route(async (req, res) => {
    await Order.updateOne({ _id: req.params.id }, { $set: { status: 'cancelled' } })
    res.json({ ok: true })
  }))

  app.use('/api/sync', sync.router())
  return app
}

module.exports = { createApp }
