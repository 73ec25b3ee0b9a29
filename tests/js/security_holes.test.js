'use strict'
// Holes in tenant isolation found by attacking a real server through the official
// driver (issue 12, items 1, 3, 4, 5, 6): each test is the attack, and asserts it is
// refused. See docs/security.md, "Invariants".

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startServer, expectFaunaError, q, safeStringify } = require('./helpers/server')

const unauthorized = p => expectFaunaError(p, 'Unauthorized', 'unauthorized')
const notFound = p => expectFaunaError(p, 'NotFound', 'instance not found')
const refusedHistory = p => expectFaunaError(p, 'BadRequest', 'invalid argument')

/** The names of the collections a client sees. */
async function collectionNames(client) {
  const page = await client.query(q.Paginate(q.Collections()))
  return page.data.map(r => r.id).sort()
}

describe('a key is bound to its database, not its name', { timeout: 120_000 }, () => {
  let server
  let root

  before(async () => {
    server = await startServer()
    root = server.adminClient()
  })
  after(async () => {
    if (server) await server.stop()
  })

  it('a key of a deleted database opens nothing, not the next database with its name', async () => {
    await root.query(q.CreateDatabase({ name: 'acme' }))
    const key = await root.query(q.CreateKey({ database: q.Database('acme'), role: 'admin' }))
    const old = server.client(key.secret)
    await old.query(q.CreateCollection({ name: 'acme_old' }))
    await root.query(q.Delete(q.Database('acme')))
    await unauthorized(old.query(q.Paginate(q.Collections())))

    await root.query(q.CreateDatabase({ name: 'acme' }))
    const tenant2 = server.client(`${server.rootKey}:acme:admin`)
    await tenant2.query(q.CreateCollection({ name: 'tenant2_private' }))
    await tenant2.query(q.Create(q.Collection('tenant2_private'), { data: { card: '4111' } }))
    await unauthorized(old.query(q.Paginate(q.Collections())))
    await unauthorized(old.query(q.Paginate(q.Documents(q.Collection('tenant2_private')))))
    // Deleting the database deleted the key its parent held for it.
    assert.equal(await root.query(q.Exists(key.ref)), false)
  })

  it('a key of a renamed database keeps opening it, never the new database with the old name', async () => {
    await root.query(q.CreateDatabase({ name: 'beta' }))
    const key = await root.query(q.CreateKey({ database: q.Database('beta'), role: 'server' }))
    const k = server.client(key.secret)
    await k.query(q.CreateCollection({ name: 'beta_own' }))
    await root.query(q.Update(q.Database('beta'), { name: 'beta_renamed' }))
    await root.query(q.CreateDatabase({ name: 'beta' }))
    await server.client(`${server.rootKey}:beta:admin`).query(q.CreateCollection({ name: 'newcomer' }))
    assert.deepEqual(await collectionNames(k), ['beta_own'])
    const got = await root.query(q.Get(key.ref))
    assert.equal(got.database.id, 'beta_renamed', safeStringify(got))
    assert.equal(Object.keys(got).filter(f => f.startsWith('__')).length, 0, 'no hidden field shows')
  })

  it('keys for a descendant die with an ancestor', async () => {
    await root.query(q.CreateDatabase({ name: 'gp' }))
    const gpAdmin = server.client(`${server.rootKey}:gp:admin`)
    await gpAdmin.query(q.CreateDatabase({ name: 'kid' }))
    const key = await root.query(q.CreateKey({ database: q.Database('kid', q.Database('gp')), role: 'admin' }))
    const k = server.client(key.secret)
    assert.deepEqual(await collectionNames(k), [])
    await root.query(q.Delete(q.Database('gp')))
    await root.query(q.CreateDatabase({ name: 'gp' }))
    await server.client(`${server.rootKey}:gp:admin`).query(q.CreateDatabase({ name: 'kid' }))
    await unauthorized(k.query(q.Paginate(q.Collections())))
    assert.equal(await root.query(q.Exists(key.ref)), false)
  })
})

describe('history edits of schema and security documents are refused', { timeout: 120_000 }, () => {
  let server
  let admin
  let serverKey

  before(async () => {
    server = await startServer()
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'hist' }))
    admin = server.client(`${server.rootKey}:hist:admin`)
    serverKey = server.client((await admin.query(q.CreateKey({ role: 'server' }))).secret)
  })
  after(async () => {
    if (server) await server.stop()
  })

  it('Remove of the update that narrowed an admin function does not restore it', async () => {
    await admin.query(
      q.CreateFunction({ name: 'f', role: 'admin', body: q.Query(q.Lambda('x', q.Paginate(q.Keys()))) })
    )
    const narrowed = await admin.query(
      q.Update(q.Function('f'), { role: 'server', body: q.Query(q.Lambda('x', 'safe')) })
    )
    await refusedHistory(serverKey.query(q.Remove(q.Function('f'), narrowed.ts, 'update')))
    assert.equal(await serverKey.query(q.Call(q.Function('f'), 0)), 'safe')
    const got = await admin.query(q.Get(q.Function('f')))
    assert.equal(got.role, 'server')
  })

  it('Remove of a delete event does not resurrect an admin function', async () => {
    await admin.query(
      q.CreateFunction({ name: 'g', role: 'admin', body: q.Query(q.Lambda('x', q.Paginate(q.Keys()))) })
    )
    await admin.query(q.Delete(q.Function('g')))
    const events = await admin.query(q.Paginate(q.Events(q.Function('g'))))
    const del = events.data.find(e => e.action === 'delete')
    assert.ok(del, safeStringify(events))
    await refusedHistory(serverKey.query(q.Remove(q.Function('g'), del.ts, 'delete')))
    await refusedHistory(admin.query(q.Remove(q.Function('g'), del.ts, 'delete')))
    await expectFaunaError(serverKey.query(q.Call(q.Function('g'), 0)), 'BadRequest', 'invalid ref')
  })

  it('every schema kind refuses Insert and Remove for every role', async () => {
    await admin.query(q.CreateCollection({ name: 'c' }))
    await admin.query(q.CreateIndex({ name: 'i', source: q.Collection('c') }))
    await admin.query(q.CreateRole({ name: 'r', privileges: [] }))
    await admin.query(q.CreateDatabase({ name: 'd' }))
    const key = await admin.query(q.CreateKey({ role: 'client' }))
    const user = await admin.query(q.Create(q.Collection('c'), { credentials: { password: 'pw-123456' } }))
    const tok = await admin.query(q.Create(q.Tokens(), { instance: user.ref }))
    const refs = {
      collection: q.Collection('c'),
      index: q.Index('i'),
      function: q.Function('f'),
      role: q.Role('r'),
      database: q.Database('d'),
      key: key.ref,
      token: tok.ref,
    }
    // Nor may Insert write a password into a user document's history (it would be
    // stored as written, unhashed).
    await refusedHistory(admin.query(q.Insert(user.ref, 1_000_000, 'update', { credentials: { password: 'x' } })))
    const callers = { admin, server: serverKey }
    for (const role of ['server-readonly', 'client']) {
      callers[role] = server.client((await admin.query(q.CreateKey({ role }))).secret)
    }
    for (const [who, client] of Object.entries(callers)) {
      for (const [kind, ref] of Object.entries(refs)) {
        await refusedHistory(client.query(q.Insert(ref, 1_000_000, 'create', { data: { x: 1 } }))).catch(e => {
          throw new Error(`${who} Insert on ${kind}: ${e.message}`)
        })
        await refusedHistory(client.query(q.Remove(ref, 1_000_000, 'create'))).catch(e => {
          throw new Error(`${who} Remove on ${kind}: ${e.message}`)
        })
      }
    }
  })
})

describe('At(ts, Call(f)) runs the function as it is now', { timeout: 120_000 }, () => {
  let server
  let admin
  let secretDoc

  before(async () => {
    server = await startServer()
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'attime' }))
    admin = server.client(`${server.rootKey}:attime:admin`)
    await admin.query(q.CreateCollection({ name: 'vault' }))
    secretDoc = await admin.query(q.Create(q.Collection('vault'), { data: { launch_code: '0000' } }))
  })
  after(async () => {
    if (server) await server.stop()
  })

  it('a narrowed public function does not run its old body with its old role', async () => {
    const made = await admin.query(
      q.CreateFunction({
        name: 'leaky',
        role: 'server',
        body: q.Query(q.Lambda('x', q.Select(['data', 'launch_code'], q.Get(secretDoc.ref)))),
        permissions: { call: 'public' },
      })
    )
    await admin.query(q.Update(q.Function('leaky'), { role: 'client', body: q.Query(q.Lambda('x', 'safe')) }))
    const client = server.client((await admin.query(q.CreateKey({ role: 'client' }))).secret)
    const got = await client.query(q.At(made.ts, q.Call(q.Function('leaky'), 0)))
    assert.equal(got, 'safe')
  })

  it('no role reads through an old version of a function (At + Call matrix)', async () => {
    const made = await admin.query(
      q.CreateFunction({
        name: 'leaky2',
        role: 'admin',
        body: q.Query(q.Lambda('x', q.Select(['data', 'launch_code'], q.Get(secretDoc.ref)))),
        permissions: { call: 'public' },
      })
    )
    await admin.query(q.Update(q.Function('leaky2'), { role: 'client', body: q.Query(q.Lambda('x', 'safe')) }))
    for (const role of ['admin', 'server', 'server-readonly', 'client']) {
      const c = server.client((await admin.query(q.CreateKey({ role }))).secret)
      let got
      try {
        got = await c.query(q.At(made.ts, q.Call(q.Function('leaky2'), 0)))
      } catch (e) {
        got = e.name
      }
      // server-readonly may not call functions at all (permission denied); the others
      // run today's body.
      const want = role === 'server-readonly' ? 'PermissionDenied' : 'safe'
      assert.equal(got, want, `${role}: ${safeStringify(got)}`)
    }
  })

  it('a deleted admin function cannot be called through At', async () => {
    const made = await admin.query(
      q.CreateFunction({ name: 'gone', role: 'admin', body: q.Query(q.Lambda('x', q.Paginate(q.Keys()))) })
    )
    await admin.query(q.Delete(q.Function('gone')))
    const serverKey = server.client((await admin.query(q.CreateKey({ role: 'server' }))).secret)
    await expectFaunaError(serverKey.query(q.At(made.ts, q.Call(q.Function('gone'), 0))), 'BadRequest', 'invalid ref')
  })

  it('At still moves the reads of the current body', async () => {
    const doc = await admin.query(q.Create(q.Collection('vault'), { data: { v: 1 } }))
    await admin.query(q.Update(doc.ref, { data: { v: 2 } }))
    await admin.query(
      q.CreateFunction({ name: 'reader', body: q.Query(q.Lambda('r', q.Select(['data', 'v'], q.Get(q.Var('r'))))) })
    )
    assert.equal(await admin.query(q.At(doc.ts, q.Call(q.Function('reader'), doc.ref))), 1)
    assert.equal(await admin.query(q.Call(q.Function('reader'), doc.ref)), 2)
  })
})

describe('tokens and their identity', { timeout: 120_000 }, () => {
  let server
  let admin

  before(async () => {
    server = await startServer()
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'tok' }))
    admin = server.client(`${server.rootKey}:tok:admin`)
    await admin.query(q.CreateCollection({ name: 'users' }))
    await admin.query(q.CreateCollection({ name: 'things' }))
    await admin.query(
      q.CreateIndex({ name: 'things_by_x', source: q.Collection('things'), terms: [{ field: ['data', 'x'] }] })
    )
  })
  after(async () => {
    if (server) await server.stop()
  })

  async function login(id) {
    const ref = q.Ref(q.Collection('users'), id)
    await admin.query(q.Create(ref, { credentials: { password: 'carol-pw-1' } }))
    const t = await admin.query(q.Login(ref, { password: 'carol-pw-1' }))
    return { ref, token: t, client: server.client(t.secret) }
  }

  it('a token does not come back when its identity document is created again', async () => {
    const carol = await login('10')
    const me = await carol.client.query(q.CurrentIdentity())
    assert.equal(me.id, '10')
    await admin.query(q.Delete(carol.ref))
    await unauthorized(carol.client.query(q.CurrentIdentity()))
    await admin.query(q.Create(carol.ref, { data: { name: 'not carol' } }))
    await unauthorized(carol.client.query(q.CurrentIdentity()))
    // Updates and replaces of the same identity keep its tokens.
    const dave = await login('11')
    await admin.query(q.Update(dave.ref, { data: { n: 1 } }))
    await admin.query(q.Replace(dave.ref, { data: { n: 2 } }))
    assert.equal((await dave.client.query(q.CurrentIdentity())).id, '11')
  })

  it('Update of a token ttl into the past ends the token', async () => {
    const erin = await login('12')
    assert.equal((await erin.client.query(q.CurrentIdentity())).id, '12')
    const upd = await admin.query(q.Update(erin.token.ref, { ttl: q.TimeSubtract(q.Now(), 1, 'hour') }))
    assert.ok(upd.ttl, safeStringify(upd))
    await unauthorized(erin.client.query(q.CurrentIdentity()))
  })

  it('Replace of a token keeps its instance', async () => {
    const fay = await login('13')
    await admin.query(q.Replace(fay.token.ref, { data: { device: 'phone' } }))
    const got = await admin.query(q.Get(fay.token.ref))
    assert.equal(got.instance.id, '13', safeStringify(got))
    assert.deepEqual(got.data, { device: 'phone' })
    assert.equal((await fay.client.query(q.CurrentIdentity())).id, '13')
  })

  it('a document past its ttl is no longer readable', async () => {
    const past = await admin.query(
      q.Create(q.Collection('things'), { data: { x: 1 }, ttl: q.TimeSubtract(q.Now(), 1, 'minute') })
    )
    await notFound(admin.query(q.Get(past.ref)))
    assert.equal(await admin.query(q.Exists(past.ref)), false)
    const live = await admin.query(q.Create(q.Collection('things'), { data: { x: 2 } }))
    const expired = await admin.query(q.Update(live.ref, { ttl: q.TimeSubtract(q.Now(), 1, 'minute') }))
    await notFound(admin.query(q.Get(live.ref)))
    const docs = await admin.query(q.Paginate(q.Documents(q.Collection('things'))))
    assert.deepEqual(docs.data, [])
    for (const x of [1, 2]) {
      const page = await admin.query(q.Paginate(q.Match(q.Index('things_by_x'), x)))
      assert.deepEqual(page.data, [], `Match on x=${x}: ${safeStringify(page)}`)
    }
    // Created again under the same ref, the document is new and indexed once.
    await admin.query(q.Create(live.ref, { data: { x: 3 } }))
    const again = await admin.query(q.Paginate(q.Match(q.Index('things_by_x'), 3)))
    assert.equal(again.data.length, 1)
    assert.deepEqual((await admin.query(q.Paginate(q.Match(q.Index('things_by_x'), 2)))).data, [])
    // History before the ttl stays readable.
    const before = await admin.query(q.At(live.ts, q.Get(live.ref)))
    assert.deepEqual(before.data, { x: 2 })
    assert.ok(expired.ttl)
  })
})
