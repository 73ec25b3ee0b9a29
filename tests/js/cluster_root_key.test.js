'use strict'
// The root key is cluster data (docs/cluster.md): only member 1 is started with
// --root-key and logs its hash when the cluster first starts; members 2 and 3, started
// without it over mutual TLS, serve the root key's reads and writes through the official
// driver. `tally root-key rotate` logs a new hash: afterwards the old key answers 401 on
// every member and the new one works, also after every member restarted (member 1 still
// with the old --root-key, which it reports and ignores).

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync, spawnSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { HOST, sleep, rawRequest, faunadb, TallyServer, freePort } = require('./helpers/server')
const { TallyCluster, BIN } = require('./helpers/cluster')

const q = faunadb.query

function client(member, secret) {
  return new faunadb.Client({ secret, domain: HOST, port: member.port, scheme: 'http', timeout: 15, checkNewVersion: false })
}

/** Retry `f` until it returns truthy, for at most `ms`. */
async function until(what, f, ms = 20_000) {
  const deadline = Date.now() + ms
  let last
  for (;;) {
    try {
      last = await f()
      if (last) return last
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) assert.fail(`${what}: still not so after ${ms} ms (last: ${last && (last.message || JSON.stringify(last))})`)
    await sleep(200)
  }
}

const unauthorized = async (member, secret) => {
  try {
    await client(member, secret).query(q.Count(q.Documents(q.Collection('notes'))))
    return false
  } catch (e) {
    return e.requestResult && e.requestResult.statusCode === 401
  }
}

/** On every member: `old` gets 401 and `current` reads the notes. */
async function onlyCurrentKeyWorks(cluster, old, current, notes) {
  for (const m of cluster.members) {
    await until(`member ${m.id} refuses the old root key`, () => unauthorized(m, old))
    const n = await until(`member ${m.id} reads with the new root key`, async () => {
      const c = await client(m, current).query(q.Count(q.Documents(q.Collection('notes'))))
      return c === notes ? c : false
    })
    assert.equal(n, notes)
  }
}

test('members without --root-key serve the replicated root key; a rotation reaches every member and survives restarts', { timeout: 240_000 }, async t => {
  const cluster = await new TallyCluster({ replicas: 3, peerTls: true, rootKeyMembers: [1] }).start()
  t.after(() => cluster.stop())
  const old = cluster.rootKey
  try {
    for (const id of [2, 3]) assert.ok(!cluster.member(id).args().includes('--root-key'))
    const [m1, m2, m3] = [1, 2, 3].map(id => cluster.member(id))
    // The bootstrap record reaches the members that never held the key.
    for (const m of [m2, m3]) {
      const s = await until(`member ${m.id} knows the root key`, async () => {
        const r = await m.status()
        return r.status === 200 && r.body
      })
      assert.deepEqual(s.root_key, { set: true, flag: 'none' })
      assert.doesNotMatch(JSON.stringify(s), new RegExp(crypto.createHash('sha256').update(old).digest('hex')), 'the status never shows the hash')
    }
    assert.deepEqual((await m1.status()).body.root_key, { set: true, flag: 'matches' })

    // Writes and reads with the root key on members started without it.
    const c2 = client(m2, old)
    await c2.query(q.CreateCollection({ name: 'notes' }))
    const doc = await c2.query(q.Create(q.Collection('notes'), { data: { n: 1 } }))
    await client(m3, old).query(q.Create(q.Collection('notes'), { data: { n: 2 } }))
    const read = await until('member 3 reads member 2\'s write', () => client(m3, old).query(q.Get(doc.ref)))
    assert.equal(read.data.n, 1)

    // Rotate through a member that never held the key.
    const next = 'tally-rotated-' + crypto.randomBytes(8).toString('hex')
    const out = execFileSync(BIN, ['root-key', 'rotate', '--endpoint', `http://${HOST}:${m3.port}`, '--root-key', old, '--new-root-key', next]).toString()
    assert.match(out, /"rotated":true/)
    cluster.rootKey = next
    await onlyCurrentKeyWorks(cluster, old, next, 2)
    // The old key can rotate no more; a too-short new key is refused.
    const again = await rawRequest(m2.port, { method: 'POST', path: '/cluster/root-key', body: JSON.stringify({ root_key: 'stolen-root-key' }), headers: { authorization: `Bearer ${old}`, 'content-type': 'application/json' } })
    assert.equal(again.status, 401, again.body)
    const short = await rawRequest(m2.port, { method: 'POST', path: '/cluster/root-key', body: JSON.stringify({ root_key: 'short' }), headers: { authorization: `Bearer ${next}`, 'content-type': 'application/json' } })
    assert.equal(short.status, 400, short.body)
    assert.match(short.body, /at least|8 to 1024/)

    // Restart every member; member 1 still gets the old --root-key.
    await Promise.all(cluster.members.map(m => m.stop()))
    for (const m of cluster.members) m.start()
    for (const m of cluster.members) await m.waitUp()
    await cluster.leader()
    await onlyCurrentKeyWorks(cluster, old, next, 2)
    await until('member 1 says its --root-key is not the cluster\'s', () => m1.output.includes("not the cluster's root key"))
    assert.equal((await m1.status()).body.root_key.flag, 'differs')
    // Writes still work on every member with the new key.
    for (const m of cluster.members) await client(m, next).query(q.Create(q.Collection('notes'), { data: { by: m.id } }))
  } catch (e) {
    t.diagnostic(cluster.logs())
    throw e
  }
})

function withoutRootKey() {
  const env = { ...process.env }
  delete env.TALLY_ROOT_KEY
  return env
}

test('a member without --root-key over plain HTTP is refused with what to do; a single node has no rotation', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-rk-'))
  try {
    const r = spawnSync(BIN, ['serve', '--node-id', '1', '--cluster', `1=${HOST}:${await freePort()}`, '--listen', `${HOST}:${await freePort()}`, '--data-dir', dir],
      { env: withoutRootKey(), timeout: 20_000 })
    assert.notEqual(r.status, 0)
    assert.match(r.stderr.toString(), /without --root-key must talk mutual TLS/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const server = new TallyServer()
  await server.start()
  try {
    const res = await rawRequest(server.port, { method: 'POST', path: '/cluster/root-key', body: JSON.stringify({ root_key: 'another-root-key' }), headers: { authorization: `Bearer ${server.rootKey}` } })
    assert.equal(res.status, 404)
    assert.match(res.body, /single node/)
    // The single node's --root-key still works as before.
    const c = new faunadb.Client({ secret: server.rootKey, domain: HOST, port: server.port, scheme: 'http', checkNewVersion: false })
    assert.equal(await c.query(q.Add(1, 2)), 3)
  } finally {
    await server.stop()
  }
})
