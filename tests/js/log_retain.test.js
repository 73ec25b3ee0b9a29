'use strict'
// Issue 19, item 4: the input log does not fill the disk. A node with tiny segments and
// `--log-retain checkpoint` rolls many segments and removes the old ones once the state
// store made them durable; after kill -9 it comes back with every acknowledged write and
// the same head; ledger proofs of transactions in removed segments still verify (the
// ledger is served from the state store, not the log); `tally verify` checks the chain
// and says the replay was skipped; a backup restores. A format-2 data directory
// (`log/input.log`) is converted in place.

const { describe, it, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { TallyServer, q, rawRequest } = require('./helpers/server')
const V = require('./helpers/ledger_verify')

const SEGMENT_BYTES = 4096
const FIRST_SEGMENT = '00000000000000000001.seg'
const servers = []
const tmps = []

after(async () => {
  for (const s of servers) await s.stop().catch(() => {})
  for (const d of tmps) fs.rmSync(d, { recursive: true, force: true })
})

async function start(opts) {
  const s = new TallyServer(opts)
  servers.push(s)
  await s.start()
  return s
}

function retaining(extra = {}) {
  return { extraArgs: ['--log-segment-bytes', String(SEGMENT_BYTES), '--log-retain', 'checkpoint'], ...extra }
}

async function get(s, p) {
  const r = await rawRequest(s.port, { method: 'GET', path: p, headers: { authorization: `Bearer ${s.rootKey}` } })
  return { status: r.status, body: JSON.parse(r.body) }
}

const segments = s => fs.readdirSync(path.join(s.dataDir, 'log')).filter(n => n.endsWith('.seg')).sort()

function tally(s, args) {
  return spawnSync(s.bin, args, {
    encoding: 'utf8',
    env: { ...process.env, TALLY_ROOT_KEY: s.rootKey, TALLY_ENDPOINT: s.url },
    timeout: 120_000,
  })
}

/** Polls `f` until it returns truthy (at most `ms`); the last value. */
async function until(f, ms = 30_000) {
  const end = Date.now() + ms
  let v
  while (!(v = await f()) && Date.now() < end) await new Promise(r => setTimeout(r, 100))
  return v
}

describe('input log segments and retention', { timeout: 300_000 }, () => {
  it('old segments go, and kill -9, proofs, verify and backup still hold', async () => {
    const s = await start(retaining())
    const c = s.adminClient()
    await c.query(q.CreateCollection({ name: 'c' }))
    // The first transaction, whose segment will be removed: its proof must still verify.
    const first = await c.query(q.Create(q.Ref(q.Collection('c'), '1'), { data: { i: 0, pad: 'x'.repeat(300) } }))
    const acked = [first.ref.id]
    for (let round = 0; round < 30; round++) {
      const docs = await Promise.all(
        Array.from({ length: 8 }, (_, k) => c.query(q.Create(q.Collection('c'), { data: { i: round * 8 + k, pad: 'y'.repeat(300) } })))
      )
      for (const d of docs) acked.push(d.ref.id)
    }
    // Rolled many segments; the ones wholly in a durable checkpoint are removed. The
    // executor checkpoints at a batch end about once a second, so a trickle of writes goes
    // on meanwhile (an idle node's checkpoint, and so retirement, waits for its next write).
    const left = await until(async () => {
      const d = await c.query(q.Create(q.Collection('c'), { data: { trickle: true } }))
      acked.push(d.ref.id)
      const segs = segments(s)
      return !segs.includes(FIRST_SEGMENT) && segs.length <= 3 && segs
    })
    assert.ok(left, `old segments were removed: ${segments(s)}`)
    const firstLeft = Number(left[0].slice(0, 20))
    assert.ok(firstLeft > 10, `the log starts at batch ${firstLeft}`)
    for (const n of left.slice(0, -1)) {
      assert.ok(fs.statSync(path.join(s.dataDir, 'log', n)).size <= SEGMENT_BYTES, `${n} is within the bound`)
    }

    const head = (await get(s, '/ledger/head')).body
    const sth = (await get(s, '/ledger/v1/get-sth')).body
    await s.proc.kill('SIGKILL')
    await s.exited

    const s2 = await start(retaining({ dataDir: s.dataDir, rootKey: s.rootKey }))
    const c2 = s2.adminClient()
    const ids = await c2.query(q.Select('data', q.Paginate(q.Documents(q.Collection('c')), { size: 1000 })))
    assert.deepEqual(ids.map(r => r.id).sort(), [...acked].sort(), 'every acknowledged write is there')
    assert.deepEqual((await get(s2, '/ledger/head')).body, head, 'the head is unchanged')

    // A proof of the first transaction (its batch's segment is gone) verifies against the
    // signed head taken before the crash.
    const proof = await get(s2, `/ledger/v1/get-proof-by-revision?ref=c/1&ts=${first.ts}&tree_size=${sth.tree_size}`)
    assert.equal(proof.status, 200, JSON.stringify(proof.body))
    const pk = sth.signatures[0].public_key
    assert.ok(V.verifySthSignature(sth, pk, sth.tree_head_signature))
    const { leaf } = V.verifyRevision(proof.body, sth, { id: '1', ts: first.ts })
    assert.equal(leaf.ts, BigInt(first.ts))
    // Entries (with their input records) of the removed batches are still served.
    const entries = await get(s2, '/ledger/v1/get-entries?start=0&end=3')
    assert.equal(entries.status, 200, JSON.stringify(entries.body))
    assert.equal(entries.body.entries.length, 4)

    // It keeps writing and retiring.
    for (let i = 0; i < 40; i++) await c2.query(q.Create(q.Collection('c'), { data: { after: i, pad: 'z'.repeat(300) } }))
    let extra = 0
    const goesOn = await until(async () => {
      await c2.query(q.Create(q.Collection('c'), { data: { trickle: true } }))
      extra++
      return Number(segments(s2)[0].slice(0, 20)) > firstLeft
    })
    assert.ok(goesOn, 'retirement goes on after a restart')

    // A backup carries the log from its first segment left and restores to the same head.
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-logret-'))
    tmps.push(tmp)
    const file = path.join(tmp, 'node.backup')
    const bk = tally(s2, ['backup', '--out', file])
    assert.equal(bk.status, 0, bk.stdout + bk.stderr)
    const headNow = (await get(s2, '/ledger/head')).body
    const restoredDir = path.join(tmp, 'restored')
    const rr = tally(s2, ['restore', file, '--data-dir', restoredDir])
    assert.equal(rr.status, 0, rr.stdout + rr.stderr)

    // `tally verify` on the stopped node: the chain, leaves, signatures and state check;
    // the replay is reported skipped with the height the log starts at.
    await s2.stop({ keepData: true })
    const v = spawnSync(s2.bin, ['verify', '--data-dir', s2.dataDir], { encoding: 'utf8', timeout: 120_000 })
    assert.equal(v.status, 0, v.stdout + v.stderr)
    assert.match(v.stdout, /note: the input log starts at batch \d+ .*--log-retain/)
    assert.match(v.stdout, /^ok: \d+ blocks/m)
    // The state can no longer be rebuilt from the log alone: moved aside, the node refuses
    // to start and says why.
    const state = path.join(s2.dataDir, 'state.redb')
    fs.renameSync(state, state + '.aside')
    const refused = spawnSync(s2.bin, ['serve', '--data-dir', s2.dataDir, '--listen', '127.0.0.1:0', '--root-key', s2.rootKey,
      ...retaining().extraArgs], { encoding: 'utf8', timeout: 60_000 })
    assert.notEqual(refused.status, 0)
    assert.match(refused.stderr + refused.stdout, /batch 1 is no longer in the input log .*--log-retain/s)
    fs.renameSync(state + '.aside', state)

    // Nothing was written between the backup and `headNow`: the restored node has that
    // head, and its log starts where the original's did (the retired batches stay gone).
    const restoredSegs = fs.readdirSync(path.join(restoredDir, 'log'))
    assert.ok(!restoredSegs.includes(FIRST_SEGMENT), `${restoredSegs}`)
    const r = await start({ dataDir: restoredDir, rootKey: s2.rootKey })
    assert.deepEqual((await get(r, '/ledger/head')).body.header, headNow.header)
    await r.adminClient().query(q.Create(q.Collection('c'), { data: { restored: true } }))
    assert.equal(await r.adminClient().query(q.Count(q.Documents(q.Collection('c')))), acked.length + 41 + extra)
  })

  it('--log-retain all keeps every segment; a bad policy is refused', async () => {
    const s = await start({ extraArgs: ['--log-segment-bytes', String(SEGMENT_BYTES)] })
    const c = s.adminClient()
    await c.query(q.CreateCollection({ name: 'c' }))
    for (let i = 0; i < 30; i++) await c.query(q.Create(q.Collection('c'), { data: { pad: 'k'.repeat(400) } }))
    await new Promise(r => setTimeout(r, 2500))
    const segs = segments(s)
    assert.ok(segs.length > 3 && segs[0] === FIRST_SEGMENT, `${segs}`)
    const bad = spawnSync(s.bin, ['serve', '--data-dir', s.dataDir, '--log-retain', 'sometimes'], { encoding: 'utf8' })
    assert.notEqual(bad.status, 0)
    assert.match(bad.stderr, /not a log retention policy; use all, checkpoint or archive:DIR/)
  })

  it('a format-2 data directory (one input.log) is converted in place', async () => {
    const s = await start({})
    const c = s.adminClient()
    await c.query(q.CreateCollection({ name: 'c' }))
    for (let i = 0; i < 5; i++) await c.query(q.Create(q.Collection('c'), { data: { i } }))
    const head = (await get(s, '/ledger/head')).body
    await s.proc.kill('SIGKILL')
    await s.exited
    // Make it what a format-2 build left: the frames without the segment header in
    // log/input.log, and the format-2 marker.
    const seg = path.join(s.dataDir, 'log', FIRST_SEGMENT)
    fs.writeFileSync(path.join(s.dataDir, 'log', 'input.log'), fs.readFileSync(seg).subarray(32))
    fs.rmSync(seg)
    fs.writeFileSync(path.join(s.dataDir, 'FORMAT'), 'tally data directory format 2\n')
    const s2 = await start({ dataDir: s.dataDir, rootKey: s.rootKey })
    assert.deepEqual((await get(s2, '/ledger/head')).body, head)
    assert.equal(await s2.adminClient().query(q.Count(q.Documents(q.Collection('c')))), 5)
    assert.equal(fs.readFileSync(path.join(s.dataDir, 'FORMAT'), 'utf8'), 'tally data directory format 5\n')
    assert.deepEqual(fs.readdirSync(path.join(s.dataDir, 'log')), [FIRST_SEGMENT])
  })
})
