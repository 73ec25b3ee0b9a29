'use strict'
// Streams on a cluster (issue 15, item 1): a follower streams what it applies — a
// document stream opened on a follower sees the writes made through the leader, in order.

const test = require('node:test')
const assert = require('node:assert/strict')
const { q } = require('./helpers/server')
const { TallyCluster } = require('./helpers/cluster')

test('a stream on a follower sees the leader’s writes in order', { timeout: 120_000 }, async t => {
  const cluster = await new TallyCluster({ replicas: 3 }).start()
  t.after(() => cluster.stop())
  const leader = await cluster.leader()
  const [f1] = await cluster.followers()
  const lc = leader.client()
  await lc.query(q.CreateCollection({ name: 'things' }))
  const ref = q.Ref(q.Collection('things'), '1')
  await lc.query(q.Create(ref, { data: { seq: 0 } }))
  const fc = f1.client()
  // The follower may not have applied the create yet; the driver's document stream
  // reads a snapshot of the document after `start`, so wait (by txn time) until it has.
  fc.syncLastTxnTime(lc.getLastTxnTime())
  for (let i = 0; ; i++) {
    try {
      await fc.query(q.Get(ref))
      break
    } catch (e) {
      if (e.name !== 'NotFound' || i >= 300) throw e
      await new Promise(r => setTimeout(r, 20))
    }
  }
  const seqs = []
  let started
  const startedP = new Promise(r => (started = r))
  const done = new Promise((resolve, reject) => {
    const sub = fc.stream.document(ref)
    sub.on('start', () => started())
    sub.on('version', v => {
      seqs.push(v.document.data.seq)
      if (seqs.length === 10) {
        sub.close()
        resolve()
      }
    })
    sub.on('error', e => reject(e))
    sub.start()
    setTimeout(() => reject(new Error(`timed out with ${JSON.stringify(seqs)}`)), 60_000)
  })
  await startedP
  for (let i = 1; i <= 10; i++) await lc.query(q.Update(ref, { data: { seq: i } }))
  await done
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
})
