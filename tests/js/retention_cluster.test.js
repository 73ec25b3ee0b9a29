'use strict'
// Retention on a cluster (issue 15 item 3): with no further write, the leader logs an
// empty batch once a sweep is due, and every member removes the expired document at the
// same height — their heads agree and each member's removal counter moves.

const test = require('node:test')
const assert = require('node:assert/strict')
const { q, sleep, rawRequest } = require('./helpers/server')
const { TallyCluster } = require('./helpers/cluster')

const MINUTE = 60_000_000

/** A member's retention removal count, from its /metrics (root key). */
async function removed(member) {
  const r = await rawRequest(member.port, {
    method: 'GET', path: '/metrics', timeoutMs: 5000, headers: { authorization: `Bearer ${member.cluster.rootKey}` },
  })
  assert.equal(r.status, 200, r.body)
  const m = /^tally_retention_removed_versions_total (\d+)$/m.exec(r.body)
  assert.ok(m, 'the removal counter is exposed')
  return Number(m[1])
}

test('an idle cluster sweeps an expired document on every member at the same height', { timeout: 180_000 }, async t => {
  const cluster = await new TallyCluster({ replicas: 3 }).start()
  t.after(() => cluster.stop())
  const leader = await cluster.leader()
  const c = leader.client()
  await c.query(q.CreateCollection({ name: 'idle', history_days: 0 }))
  // Created an hour ago with a ttl that the floor (now - 15 minutes) passes in 6 s.
  const now = Number(await c.query(q.ToMicros(q.Now())))
  const ref = q.Ref(q.Collection('idle'), '1')
  await c.query(q.Insert(ref, now - 60 * MINUTE, 'create', { data: { n: 1 }, ttl: q.Epoch(now - 15 * MINUTE + 6_000_000, 'microseconds') }))
  const written = await cluster.converge()
  const before = await Promise.all(cluster.members.map(removed))
  // No more writes: poll (bounded) until every member's sweep removed it.
  const deadline = Date.now() + 60_000
  let now_ = before
  while (Date.now() < deadline) {
    now_ = await Promise.all(cluster.members.map(removed))
    if (now_.every((n, i) => n > before[i])) break
    await sleep(250)
  }
  assert.ok(now_.every((n, i) => n > before[i]), `every member swept (${before} -> ${now_})\n${cluster.logs()}`)
  const swept = await cluster.converge()
  assert.ok(swept.height > written.height, `the removal is a block of its own (${written.height} -> ${swept.height})`)
  for (const m of cluster.members) assert.ok(m.alive, `member ${m.id} is up`)
})
