'use strict'
// Issue 19: an online backup of a cluster member taken while the cluster takes writes.
// The file carries the member's state at its applied height and that head signed by the
// voters that signed it (the quorum certificate). Restored into a new directory it opens
// with that head and, document for document, the state the cluster had at that head's
// timestamp; restored into a member's emptied directory, the member rejoins the cluster,
// catches up from the height it was restored at and computes the same blocks again.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { startServer, q, HOST } = require('./helpers/server')
const { tallyCli, head, allDocs } = require('./helpers/backup')
const { TallyCluster, BIN } = require('./helpers/cluster')

function tally(cluster, member, args) {
  return tallyCli(BIN, cluster.rootKey, `http://${HOST}:${member.port}`, args)
}

describe('backup of a cluster member', { timeout: 300_000 }, () => {
  let cluster
  let single
  before(async () => {
    cluster = await new TallyCluster({ replicas: 3 }).start()
  })
  after(async () => {
    if (single) await single.stop()
    if (cluster) await cluster.stop()
  })

  it('backs up under write load, restores to the same head and documents, and a restored member rejoins', async () => {
    const leader = await cluster.leader()
    await leader.client().query(q.CreateCollection({ name: 'acct' }))
    await leader.client().query(q.Map(Array.from({ length: 200 }, (_, i) => i),
      q.Lambda('i', q.Create(q.Collection('acct'), { data: { i: q.Var('i'), balance: 100 } }))))
    let stop = false
    let written = 0
    const writers = cluster.alive().map(async (m, w) => {
      const c = m.client()
      while (!stop) await c.query(q.Create(q.Collection('acct'), { data: { writer: w, n: written++ } }))
    })
    await new Promise(r => setTimeout(r, 300))
    const source = cluster.member(2)
    const file = path.join(cluster.dir, 'member2.backup')
    const r = tally(cluster, source, ['backup', '--out', file])
    await new Promise(r => setTimeout(r, 200))
    stop = true
    await Promise.all(writers)
    assert.equal(r.status, 0, r.stdout + r.stderr)
    const m = /backup of height (\d+) \(head ([0-9a-f]{64})\)/.exec(r.stdout)
    assert.ok(m, r.stdout)
    const height = Number(m[1])
    assert.ok((await source.head()).body.height > height, 'writes went on after the backup')

    // Restored into a new directory: the head, and the signatures of a majority over it.
    const dir = path.join(cluster.dir, 'restored')
    const rr = tally(cluster, source, ['restore', file, '--data-dir', dir])
    assert.equal(rr.status, 0, rr.stdout + rr.stderr)
    assert.ok(rr.stdout.includes(`restored height ${height} (head ${m[2]}`), rr.stdout)
    const signed = /signed by member\(s\) \[([\d, ]+)\] of (\d+)/.exec(rr.stdout)
    assert.ok(signed, rr.stdout)
    assert.equal(Number(signed[2]), 3)
    assert.ok(signed[1].split(',').length >= 2, `a majority signed: ${rr.stdout}`)

    // Opened on its own (the cluster's data taken out as a single node): same head,
    // every document as the cluster had it at that head's timestamp.
    single = await startServer({ dataDir: dir, rootKey: cluster.rootKey })
    const h = await head(single)
    assert.equal(h.height, height)
    assert.equal(h.hash, m[2])
    const mine = await allDocs(single.adminClient())
    const theirs = await allDocs(cluster.member(1).client(), h.header.last_ts)
    assert.ok(mine.length >= 200)
    assert.deepEqual(mine, theirs)
    await single.stop()
    single = null

    // A member whose disk is lost comes back from the backup: same id, restored
    // directory, started as before. It catches up from the backup's height. It is a
    // follower, not the backup's source: the leader saw it match entries after the
    // backup's height, so to the leader its Raft log goes backwards. (Had it led, the next
    // leader would start with no view of it, and the case would not be tested.)
    const leaderBefore = await cluster.leader()
    const lost = [cluster.member(3), cluster.member(1)].find(m => m.id !== leaderBefore.id)
    const peer = cluster.alive().find(m => m.id !== lost.id)
    await lost.stop()
    fs.rmSync(lost.dataDir, { recursive: true, force: true })
    const back = tally(cluster, source, ['restore', file, '--data-dir', lost.dataDir])
    assert.equal(back.status, 0, back.stdout + back.stderr)
    await cluster.leader().then(l => l.client().query(q.Create(q.Collection('acct'), { data: { while_down: true } })))
    lost.start()
    await lost.waitUp()
    await cluster.leader().then(l => l.client().query(q.Create(q.Collection('acct'), { data: { after: true } })))
    // The leader finds the member's log behind what it last saw it match and searches
    // again for where the two agree (issue 19: it used to retry from the old point forever).
    const now = await cluster.converge(120_000).catch(e => {
      throw new Error(`${e.message}\n${cluster.logs()}`)
    })
    assert.ok(now.height > height)
    assert.deepEqual(await allDocs(lost.client()), await allDocs(peer.client()))
    assert.doesNotMatch(lost.output, /diverge/i)
  })
})
