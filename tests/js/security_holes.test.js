'use strict'
// Holes in tenant isolation found by attacking a real server through the official
// driver (issue 12, items 1, 3, 4, 5, 6): each test is the attack, and asserts it is
// refused. See docs/security.md, "Invariants".

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startServer, expectFaunaError, q, safeStringify, sleep } = require('./helpers/server')

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
    const cred = (await admin.query(q.Paginate(q.Credentials()))).data[0]
    await admin.query(
      q.CreateAccessProvider({ name: 'ap', issuer: 'https://idp.test/', jwks_uri: 'https://idp.test/jwks', roles: [q.Role('r')] })
    )
    const refs = {
      collection: q.Collection('c'),
      index: q.Index('i'),
      function: q.Function('f'),
      role: q.Role('r'),
      database: q.Database('d'),
      key: key.ref,
      token: tok.ref,
      credentials: cred,
      'access provider': q.AccessProvider('ap'),
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

describe('a key ends at its ttl', { timeout: 120_000 }, () => {
  // v4 keys take a `ttl` like tokens; it used to be dropped from CreateKey and Update
  // (answered 200 without it), so a key meant to expire kept working.
  let server
  let root

  before(async () => {
    server = await startServer()
    root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'kt' }))
  })
  after(async () => {
    if (server) await server.stop()
  })

  const past = () => q.TimeSubtract(q.Now(), 1, 'minute')

  it('a key created with a past ttl opens nothing and is gone', async () => {
    const k = await root.query(q.CreateKey({ role: 'admin', ttl: past() }))
    assert.ok(k.ttl, safeStringify(k))
    await unauthorized(server.client(k.secret).query(q.Now()))
    await notFound(root.query(q.Get(k.ref)))
    const scoped = await root.query(q.CreateKey({ database: q.Database('kt'), role: 'admin', ttl: past() }))
    await unauthorized(server.client(`${scoped.secret}:@role/x`).query(q.Now()))
    await unauthorized(server.client(scoped.secret).query(q.Paginate(q.Collections())))
    await expectFaunaError(root.query(q.KeyFromSecret(k.secret)), 'NotFound', 'instance not found')
  })

  it('Update of a key ttl into the past ends the key; ttl must be a time', async () => {
    const k = await root.query(q.CreateKey({ database: q.Database('kt'), role: 'server' }))
    const c = server.client(k.secret)
    assert.deepEqual((await c.query(q.Paginate(q.Collections()))).data, [])
    await expectFaunaError(root.query(q.Update(k.ref, { ttl: 'tomorrow' })), 'BadRequest', 'validation failed')
    const upd = await root.query(q.Update(k.ref, { ttl: past() }))
    assert.ok(upd.ttl, safeStringify(upd))
    await unauthorized(c.query(q.Paginate(q.Collections())))
    // A later ttl set by Update, and removed again by null, keeps the key.
    const k2 = await root.query(q.CreateKey({ role: 'server', ttl: q.TimeAdd(q.Now(), 1, 'day') }))
    assert.equal(typeof (await server.client(k2.secret).query(q.Now())).value, 'string')
    const cleared = await root.query(q.Update(k2.ref, { ttl: null }))
    assert.equal(cleared.ttl, undefined, safeStringify(cleared))
    await server.client(k2.secret).query(q.Now())
  })

  it('a key stops working when its ttl passes, with no write in between', async () => {
    const k = await root.query(q.CreateKey({ role: 'server', ttl: q.TimeAdd(q.Now(), 2, 'seconds') }))
    const c = server.client(k.secret)
    await c.query(q.Now()) // authenticated (and, were it cached, cached) before the ttl
    await sleep(3_000)
    await unauthorized(c.query(q.Now()))
  })
})

describe('a role granted by a key, function or access provider is that role, not its name', { timeout: 120_000 }, () => {
  // A key holding Role("x"), a function running as Role("x") and an access provider
  // granting Role("x") named the role; deleting the role and creating another under the
  // same name handed the new role's privileges to every old holder (as database names
  // did for keys, issue 12 item 1).
  let server
  let admin
  let secret

  before(async () => {
    server = await startServer()
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'roles' }))
    admin = server.client(`${server.rootKey}:roles:admin`)
    await admin.query(q.CreateCollection({ name: 'vault' }))
    secret = await admin.query(q.Create(q.Collection('vault'), { data: { code: '0000' } }))
  })
  after(async () => {
    if (server) await server.stop()
  })

  const readVault = () => [{ resource: q.Collection('vault'), actions: { read: true } }]

  it('a key whose role was deleted gets nothing from a new role with that name', async () => {
    await admin.query(q.CreateRole({ name: 'temp', privileges: [] }))
    const k = await admin.query(q.CreateKey({ role: q.Role('temp') }))
    await admin.query(q.Delete(q.Role('temp')))
    await admin.query(q.CreateRole({ name: 'temp', privileges: readVault() }))
    await unauthorized(server.client(k.secret).query(q.Get(secret.ref)))
    // A key given the new role reads; updating the old key's data does not re-bind it.
    const k2 = await admin.query(q.CreateKey({ role: q.Role('temp') }))
    assert.equal(await server.client(k2.secret).query(q.Select(['data', 'code'], q.Get(secret.ref))), '0000')
    await admin.query(q.Update(k.ref, { data: { note: 'touched' } }))
    await unauthorized(server.client(k.secret).query(q.Get(secret.ref)))
    // Naming the role again in the key (an admin's explicit choice) binds it anew.
    await admin.query(q.Update(k.ref, { role: [q.Role('temp')] }))
    assert.equal(await server.client(k.secret).query(q.Select(['data', 'code'], q.Get(secret.ref))), '0000')
  })

  it('a key follows its role through updates and renames, never to a new role under the old name', async () => {
    await admin.query(q.CreateRole({ name: 'steady', privileges: [] }))
    const k = await admin.query(q.CreateKey({ role: q.Role('steady') }))
    const c = server.client(k.secret)
    await admin.query(q.Update(q.Role('steady'), { privileges: readVault() }))
    assert.equal(await c.query(q.Select(['data', 'code'], q.Get(secret.ref))), '0000')
    await admin.query(q.Update(q.Role('steady'), { name: 'steady_renamed' }))
    assert.equal(await c.query(q.Select(['data', 'code'], q.Get(secret.ref))), '0000', 'renamed role kept')
    await admin.query(q.CreateRole({ name: 'steady', privileges: readVault() }))
    await admin.query(q.Update(q.Role('steady_renamed'), { privileges: [] }))
    await expectFaunaError(c.query(q.Get(secret.ref)), 'PermissionDenied', 'permission denied')
  })

  it('a role’s privilege is for a collection, not for its name', async () => {
    await admin.query(q.CreateCollection({ name: 'ledger' }))
    await admin.query(
      q.CreateRole({ name: 'auditor', privileges: [{ resource: q.Collection('ledger'), actions: { read: true } }] })
    )
    const c = server.client((await admin.query(q.CreateKey({ role: q.Role('auditor') }))).secret)
    const first = await admin.query(q.Create(q.Collection('ledger'), { data: { n: 1 } }))
    assert.equal(await c.query(q.Select(['data', 'n'], q.Get(first.ref))), 1)
    // Renamed, the collection keeps the privilege.
    await admin.query(q.Update(q.Collection('ledger'), { name: 'ledger_2025' }))
    const renamed = q.Ref(q.Collection('ledger_2025'), first.ref.id)
    assert.equal(await c.query(q.Select(['data', 'n'], q.Get(renamed))), 1)
    // A new collection under the old name is not what the role was given.
    await admin.query(q.CreateCollection({ name: 'ledger' }))
    const payroll = await admin.query(q.Create(q.Collection('ledger'), { data: { salary: 1 } }))
    await expectFaunaError(c.query(q.Get(payroll.ref)), 'PermissionDenied', 'permission denied')
    // Deleted and created again: still not.
    await admin.query(q.Delete(q.Collection('ledger_2025')))
    await admin.query(q.CreateCollection({ name: 'ledger_2025' }))
    const again = await admin.query(q.Create(q.Collection('ledger_2025'), { data: { n: 2 } }))
    await expectFaunaError(c.query(q.Get(again.ref)), 'PermissionDenied', 'permission denied')
  })

  it('a function whose role was deleted runs with no privileges, not a new role’s', async () => {
    await admin.query(q.CreateRole({ name: 'fnrole', privileges: [] }))
    await admin.query(
      q.CreateFunction({
        name: 'peek',
        role: q.Role('fnrole'),
        body: q.Query(q.Lambda('x', q.Select(['data', 'code'], q.Get(secret.ref)))),
        permissions: { call: 'public' },
      })
    )
    await admin.query(q.Delete(q.Role('fnrole')))
    await admin.query(q.CreateRole({ name: 'fnrole', privileges: readVault() }))
    const client = server.client((await admin.query(q.CreateKey({ role: 'client' }))).secret)
    await expectFaunaError(client.query(q.Call(q.Function('peek'), 0)), 'BadRequest', 'call error')
    // Given the role again by an admin, it runs with it.
    await admin.query(q.Update(q.Function('peek'), { role: q.Role('fnrole') }))
    assert.equal(await client.query(q.Call(q.Function('peek'), 0)), '0000')
  })
})
