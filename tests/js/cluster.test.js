'use strict'
// A 3-member Tally cluster on loopback, driven through the official faunadb driver:
// a bank workload (100 accounts, concurrent idempotent transfers) while members are
// killed (-9), cut off and restarted; afterwards every member holds the same ledger, the
// total balance is unchanged, every acknowledged transfer is present everywhere and none
// was applied twice. Also: linearized reads on followers, divergence detection, and
// adding a member that catches up by snapshot.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')

const { q, sleep, rawRequest } = require('./helpers/server')
const { TallyCluster } = require('./helpers/cluster')
const { setupBank, runLoad, verifyBank } = require('./helpers/bank')

test('bank workload keeps every acknowledged transfer through kills, a partition and a full restart', { timeout: 420_000 }, async t => {
  const cluster = await new TallyCluster({ replicas: 3 }).start()
  t.after(() => cluster.stop())
  try {
    await setupBank(await cluster.leader())
    const allAcked = []
    const phase = async (name, ms, fault) => {
      const { acked, stats } = await runLoad(cluster, name, ms, fault)
      allAcked.push(...acked)
      t.diagnostic(`${name}: ${JSON.stringify(stats)}`)
      assert.ok(stats.ok > 20, `${name}: the workload made progress (${JSON.stringify(stats)})`)
      const head = await verifyBank(cluster, allAcked)
      t.diagnostic(`${name}: verified ${allAcked.length} acknowledged transfers; head ${head.height} ${head.hash.slice(0, 16)}`)
    }

    await phase('a-kill-leader', 6000, async () => {
      await sleep(1500)
      const l = await cluster.leader()
      await l.kill9()
      await sleep(2500)
      l.start()
      await l.waitUp()
    })

    await phase('b-kill-follower', 5000, async () => {
      await sleep(1000)
      const f = (await cluster.followers())[0]
      await f.kill9() // under load: mid-batch
      await sleep(1500)
      f.start()
      await f.waitUp()
    })

    await phase('c-partition', 6000, async () => {
      await sleep(1000)
      const l = await cluster.leader()
      await l.isolate(true)
      // A member cut off from the majority answers writes 503 in bounded time.
      const t0 = Date.now()
      const r = await l.post('/', { create: { collection: 'transfers' }, params: { object: { data: { object: { id: 'cut-off' } } } } }, { timeoutMs: 20_000 })
      const took = Date.now() - t0
      assert.equal(r.status, 503, `isolated member answered ${r.status} ${r.raw}`)
      assert.equal(r.body.errors[0].code, 'unavailable')
      assert.ok(took < cluster.writeTimeoutMs + 3000, `isolated write took ${took} ms`)
      await sleep(2000)
      await l.isolate(false)
    })

    await phase('d-restart-all', 5000, async () => {
      await sleep(1000)
      await Promise.all(cluster.members.map(m => m.kill9()))
      for (const m of cluster.members) m.start()
      for (const m of cluster.members) await m.waitUp()
    })

    // The write that was answered 503 on the cut-off member was never applied.
    const rows = (await (await cluster.leader()).client().query(q.Paginate(q.Match(q.Index('transfers_by_id'), 'cut-off')))).data
    assert.equal(rows.length, 0)
  } catch (e) {
    t.diagnostic(cluster.logs())
    throw e
  }
})

test('followers serve reads: X-Last-Seen-Txn and /linearized see writes made elsewhere', { timeout: 120_000 }, async t => {
  const cluster = await new TallyCluster({ replicas: 3 }).start()
  t.after(() => cluster.stop())
  const leader = await cluster.leader()
  const [f1, f2] = await cluster.followers()
  const w = await f1.post('/', { create_collection: { object: { name: 'notes' } } })
  assert.equal(w.status, 200, w.raw)
  for (let i = 0; i < 20; i++) {
    const via = [leader, f1, f2][i % 3]
    const r = await via.post('/', { create: { collection: 'notes' }, params: { object: { data: { object: { n: i } } } } })
    assert.equal(r.status, 200, r.raw)
    const ts = r.headers['x-txn-time']
    // Another member, with the timestamp the client saw: must include the write.
    const other = [leader, f1, f2][(i + 1) % 3]
    const seen = await other.post('/', { count: { documents: { collection: 'notes' } } }, { headers: { 'x-last-seen-txn': ts } })
    assert.equal(seen.body.resource, i + 1, `member ${other.id} after X-Last-Seen-Txn`)
    const lin = await [leader, f1, f2][(i + 2) % 3].post('/linearized', { count: { documents: { collection: 'notes' } } })
    assert.equal(lin.body.resource, i + 1, 'linearized read')
  }
  // The header form of a linearized read.
  const h = await f2.post('/', { count: { documents: { collection: 'notes' } } }, { headers: { 'x-linearized': 'true' } })
  assert.equal(h.body.resource, 20)
})

test('a member whose block header diverges stops loudly with the first divergent height', { timeout: 120_000 }, async t => {
  const cluster = new TallyCluster({ replicas: 3 })
  t.after(() => cluster.stop())
  await cluster.start()
  const bad = cluster.member(3)
  await bad.stop()
  bad.env = { TALLY_TEST_DIVERGE_AT: '4' } // its executor computes block 4 differently
  bad.start()
  await bad.waitUp()
  const good = cluster.member(1)
  for (let i = 0; i < 6; i++) {
    const r = await good.post('/', { create_collection: { object: { name: `c${i}` } } })
    assert.equal(r.status, 200, r.raw)
  }
  const exited = await Promise.race([bad.exited, sleep(20_000).then(() => null)])
  assert.ok(exited, `the divergent member kept running:\n${bad.output.slice(-2000)}`)
  assert.equal(exited.code, 71)
  assert.match(bad.output, /first divergent height 4/)
  assert.ok(fs.existsSync(path.join(bad.dataDir, 'DIVERGED')))
  // It refuses to start again until resynced; the others carry on.
  bad.start()
  const again = await Promise.race([bad.exited, sleep(15_000).then(() => null)])
  assert.ok(again && again.code !== 0, 'a diverged member must not start again')
  assert.match(bad.output, /diverged/)
  const r = await good.post('/', { create_collection: { object: { name: 'after' } } })
  assert.equal(r.status, 200, r.raw)
  for (const m of [cluster.member(1), cluster.member(2)]) assert.ok(m.alive)
})

test('adding a member while serving: it catches up by snapshot, then votes; removing one', { timeout: 180_000 }, async t => {
  const cluster = new TallyCluster({ replicas: 3, spare: 1, extraArgs: ['--snapshot-logs', '20'] })
  t.after(() => cluster.stop())
  await cluster.start()
  const leader = await cluster.leader()
  assert.equal((await leader.post('/', { create_collection: { object: { name: 'items' } } })).status, 200)
  for (let i = 0; i < 60; i++) {
    const r = await leader.post('/', { create: { collection: 'items' }, params: { object: { data: { object: { i } } } } })
    assert.equal(r.status, 200, r.raw)
  }
  const st = (await leader.status()).body
  assert.ok(st.purged !== null, `the leader purged its log behind a snapshot: ${JSON.stringify(st)}`)
  const added = cluster.member(4)
  added.start()
  await added.waitUp()
  const r = await cluster.member(2).post('/cluster/members', { id: 4, peer: `127.0.0.1:${added.peerPort}` }, { timeoutMs: 120_000 })
  assert.equal(r.status, 200, r.raw)
  assert.deepEqual(r.body.voters, [1, 2, 3, 4])
  await cluster.converge()
  const s4 = (await added.status()).body
  assert.ok(s4.snapshot !== null, `member 4 caught up from a snapshot: ${JSON.stringify(s4)}`)
  const n = await added.post('/', { count: { documents: { collection: 'items' } } })
  assert.equal(n.body.resource, 60)
  // Writes through the new member, then remove member 3 while serving.
  assert.equal((await added.post('/', { create: { collection: 'items' }, params: { object: { data: { object: { i: 60 } } } } })).status, 200)
  const rm = await added.post('/cluster/members/3', undefined, { method: 'DELETE', timeoutMs: 60_000 })
  assert.equal(rm.status, 200, rm.raw)
  // The answer is member 4's own view, which may not have applied the change yet: wait (bounded).
  let voters = rm.body.voters
  for (let i = 0; i < 50 && JSON.stringify(voters) !== '[1,2,4]'; i++) {
    await sleep(100)
    voters = (await added.status()).body.voters
  }
  assert.deepEqual(voters, [1, 2, 4])
  await cluster.member(3).stop()
  await cluster.leader() // member 3 may have led: the others elect a new leader
  const w = await cluster.member(1).post('/', { create: { collection: 'items' }, params: { object: { data: { object: { i: 61 } } } } })
  assert.equal(w.status, 200, w.raw)
  await cluster.converge()
  // Administration needs the root key.
  const denied = await added.post('/cluster/members', { id: 9, peer: '127.0.0.1:1' }, { headers: { authorization: 'Bearer nope' } })
  assert.equal(denied.status, 401)
  const anonymous = await rawRequest(added.port, { method: 'GET', path: '/cluster/status' })
  assert.equal(anonymous.status, 401, 'cluster status is for administrators only')
  assert.doesNotMatch(anonymous.body, /127\.0\.0\.1/, 'no member address leaks to an anonymous caller')
})
