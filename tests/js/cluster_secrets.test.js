'use strict'
// Secrets and password digests on the cluster path: the client talks to a follower, which
// builds the transaction input (redacting passwords, drawing the seed) and forwards it to
// the leader; every member executes it. A digest marker the follower did not write is
// refused, a new secret inside a larger string comes back whole and works on every
// member, and a placeholder a client wrote is left alone.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const { expectFaunaError, faunadb, q, HOST } = require('./helpers/server')
const { TallyCluster } = require('./helpers/cluster')

describe('secrets through a follower', { timeout: 300_000 }, () => {
  let cluster
  let follower
  let leader
  let admin
  let person
  const clients = []
  const password = 'cluster-pw-7'
  const connect = (member, secret) => {
    const c = new faunadb.Client({ secret, domain: HOST, port: member.port, scheme: 'http', timeout: 30, checkNewVersion: false })
    clients.push(c)
    return c
  }

  before(async () => {
    cluster = await new TallyCluster({ replicas: 3 }).start()
    leader = await cluster.leader()
    follower = (await cluster.followers())[0]
    const root = connect(follower, cluster.rootKey)
    await root.query(q.CreateDatabase({ name: 'tenant' }))
    const k = await root.query(q.CreateKey({ database: q.Database('tenant'), role: 'admin' }))
    admin = connect(follower, k.secret)
    await admin.query(q.CreateCollection({ name: 'people' }))
    person = (await admin.query(q.Create(q.Collection('people'), { credentials: { password } }))).ref
  })

  after(async () => {
    await Promise.all(clients.map(c => Promise.resolve(c.close({ force: true })).catch(() => {})))
    if (cluster) await cluster.stop()
  })

  it('literal passwords work; digest markers a client writes are refused', async () => {
    const t = await admin.query(q.Login(person, { password }))
    assert.match(t.secret, /^fn/)
    assert.ok(await connect(leader, t.secret).query(q.HasCurrentIdentity()))
    const digest = crypto.createHash('sha256').update(`tally.password.v1\0${password}`).digest('hex')
    for (const marker of [{ tally_password_digest: digest }, { tally_password_digest: digest, tag: '11'.repeat(32) }]) {
      const e = await expectFaunaError(
        admin.query(q.Login(person, { password: new faunadb.Expr(marker) })),
        'BadRequest',
        'invalid expression'
      )
      assert.match(e.requestResult.responseContent.errors[0].description, /reserved/)
    }
  })

  it('a new secret inside a larger string comes back whole and works on every member', async () => {
    const s = await admin.query(q.Concat(['key=', q.Select('secret', q.CreateKey({ role: 'server' }))]))
    assert.match(s, /^key=fn[A-Za-z0-9_-]+$/)
    const secret = s.slice('key='.length)
    await cluster.converge()
    for (const m of cluster.alive()) assert.equal(await connect(m, secret).query(q.Exists(q.Collection('people'))), true)
  })

  it('a placeholder a client writes is not revealed', async () => {
    const forged = '\u0000tally-secret:' + Buffer.alloc(17, 1).toString('base64url')
    const r = await admin.query(q.Let({ k: q.CreateKey({ role: 'server' }) }, [q.Select('secret', q.Var('k')), forged]))
    assert.match(r[0], /^fn/)
    assert.equal(r[1], forged)
  })
})
