'use strict'
// Serverless security through the official faunadb JS driver against a real server:
// the permission matrix (each built-in role and a user-defined role × each action on
// each resource kind), role predicates with v4's arguments, membership and tokens,
// scoped secrets, escalation attempts, and the Animal Exchange run as user-defined
// functions behind a key that may only call them.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { startServer, expectFaunaError, q, safeStringify, faunadb } = require('./helpers/server')

const denied = p => expectFaunaError(p, 'PermissionDenied', 'permission denied')

/** Every secret the suite sees; none may ever appear in the server's output. */
const SECRETS = new Set()
function remember(secret) {
  assert.equal(typeof secret, 'string')
  SECRETS.add(secret)
  return secret
}

/** The error carried by a driver failure, for the cause chain of `call error`. */
function errorBody(e) {
  return e && e.requestResult && e.requestResult.responseContent
}

async function callDenied(promise) {
  const e = await expectFaunaError(promise, 'BadRequest', 'call error')
  const cause = errorBody(e).errors[0].cause
  assert.ok(Array.isArray(cause) && cause.length > 0, safeStringify(errorBody(e)))
  assert.equal(cause[0].code, 'permission denied', safeStringify(cause))
  return e
}

// ---------------------------------------------------------------------------
// The permission matrix
// ---------------------------------------------------------------------------

const ROLES = ['admin', 'server', 'server-readonly', 'client', 'custom']

// What each role may do. The custom role "clerk" may read and create items, read the
// items index, call `echo`, and nothing else.
const A = true
const D = false
const MATRIX = {
  //                        admin server ro    client custom
  'read document':         [A, A, A, D, A],
  'create document':       [A, A, D, D, A],
  'create with id':        [A, A, D, D, D],
  'update document':       [A, A, D, D, D],
  'replace document':      [A, A, D, D, D],
  'read history':          [A, A, A, D, D],
  'insert history':        [A, A, D, D, D],
  'remove history':        [A, A, D, D, D],
  'delete document':       [A, A, D, D, D],
  'read index':            [A, A, A, D, A],
  'call function':         [A, A, D, D, A],
  'read collections':      [A, A, A, D, D],
  'create collection':     [A, A, D, D, D],
  'update collection':     [A, A, D, D, D],
  'create index':          [A, A, D, D, D],
  'create function':       [A, A, D, D, D],
  'read databases':        [A, D, D, D, D],
  'create database':       [A, D, D, D, D],
  'read keys':             [A, D, D, D, D],
  'create key':            [A, D, D, D, D],
  'read roles':            [A, D, D, D, D],
  'create role':           [A, D, D, D, D],
  'read tokens':           [A, A, A, D, D],
}

describe('permission matrix', { timeout: 300_000 }, () => {
  let server
  let admin // admin key of the tenant database
  const clients = {}
  const docs = {} // per role: a document the role's actions aim at
  const past = 1_000_000 // a history timestamp long before every document

  before(async () => {
    server = await startServer()
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'matrix' }))
    const adminKey = await root.query(q.CreateKey({ database: q.Database('matrix'), role: 'admin' }))
    admin = server.client(remember(adminKey.secret))
    await admin.query(q.CreateCollection({ name: 'items' }))
    await admin.query(q.CreateIndex({ name: 'items_all', source: q.Collection('items') }))
    await admin.query(q.CreateFunction({ name: 'echo', body: q.Query(q.Lambda('x', q.Var('x'))) }))
    await admin.query(
      q.CreateRole({
        name: 'clerk',
        privileges: [
          { resource: q.Collection('items'), actions: { read: true, create: true } },
          { resource: q.Index('items_all'), actions: { read: true } },
          { resource: q.Function('echo'), actions: { call: true } },
        ],
      })
    )
    for (const role of ROLES.slice(0, 4)) {
      const k = await admin.query(q.CreateKey({ role }))
      clients[role] = server.client(remember(k.secret))
    }
    const ck = await admin.query(q.CreateKey({ role: q.Role('clerk') }))
    clients.custom = server.client(remember(ck.secret))
    for (const role of ROLES) {
      docs[role] = await admin.query(q.Create(q.Collection('items'), { data: { owner: role } }))
    }
  })

  after(async () => {
    if (server) await server.stop()
  })

  // One query per action; each role gets its own names and documents so that the
  // allowed writes do not disturb the others.
  const ACTIONS = {
    'read document': role => q.Get(docs[role].ref),
    'create document': role => q.Create(q.Collection('items'), { data: { by: role } }),
    'create with id': role =>
      q.Create(q.Ref(q.Collection('items'), String(1000 + ROLES.indexOf(role))), { data: { by: role } }),
    'update document': role => q.Update(docs[role].ref, { data: { touched: true } }),
    'replace document': role => q.Replace(docs[role].ref, { data: { owner: role, replaced: true } }),
    'read history': role => q.Paginate(q.Events(docs[role].ref)),
    'insert history': role => q.Insert(docs[role].ref, past, 'create', { data: { old: true } }),
    'remove history': role => q.Remove(docs[role].ref, past, 'create'),
    'delete document': role => q.Delete(docs[role].ref),
    'read index': () => q.Paginate(q.Match(q.Index('items_all'))),
    'call function': () => q.Call(q.Function('echo'), 'hi'),
    'read collections': () => q.Paginate(q.Collections()),
    'create collection': role => q.CreateCollection({ name: `coll_${role.replace('-', '_')}` }),
    'update collection': role => q.Update(q.Collection('items'), { data: { by: role } }),
    'create index': role =>
      q.CreateIndex({ name: `idx_${role.replace('-', '_')}`, source: q.Collection('items') }),
    'create function': role =>
      q.CreateFunction({ name: `fn_${role.replace('-', '_')}`, body: q.Query(q.Lambda('x', 1)) }),
    'read databases': () => q.Paginate(q.Databases()),
    'create database': role => q.CreateDatabase({ name: `db_${role.replace('-', '_')}` }),
    'read keys': () => q.Paginate(q.Keys()),
    'create key': () => q.CreateKey({ role: 'client' }),
    'read roles': () => q.Paginate(q.Roles()),
    'create role': role => q.CreateRole({ name: `role_${role.replace('-', '_')}` }),
    'read tokens': () => q.Paginate(q.Tokens()),
  }

  for (const [action, expected] of Object.entries(MATRIX)) {
    it(`${action}: ${ROLES.map((r, i) => `${r}=${expected[i] ? 'allowed' : 'denied'}`).join(' ')}`, async () => {
      for (const [i, role] of ROLES.entries()) {
        const query = ACTIONS[action](role)
        if (expected[i]) {
          await clients[role].query(query).catch(e => {
            throw new Error(`${role} must be allowed to ${action}: ${e.name} ${safeStringify(errorBody(e))}`)
          })
        } else {
          await denied(clients[role].query(query)).catch(e => {
            throw new Error(`${role} must be denied ${action}: ${e.message}`)
          })
        }
      }
    })
  }

  it('v4 hides what a role may not read instead of refusing Documents() and Exists()', async () => {
    for (const role of ['client']) {
      const page = await clients[role].query(q.Paginate(q.Documents(q.Collection('items'))))
      assert.deepEqual(page.data, [])
      assert.equal(await clients[role].query(q.Exists(docs.custom.ref)), false)
    }
    const mine = await clients.custom.query(q.Paginate(q.Documents(q.Collection('items'))))
    assert.ok(mine.data.length >= 4, 'the custom role reads items')
    assert.equal(await clients.custom.query(q.Exists(docs.custom.ref)), true, 'custom could not delete it')
  })

  it('Get of a key shows only hashed_secret, never the secret', async () => {
    const k = await admin.query(q.CreateKey({ role: 'server', data: { name: 'probe' } }))
    remember(k.secret)
    const got = await admin.query(q.Get(k.ref))
    assert.equal(got.secret, undefined)
    assert.equal(typeof got.hashed_secret, 'string')
    assert.ok(!safeStringify(got).includes(k.secret))
    const listed = await admin.query(q.Map(q.Paginate(q.Keys()), r => q.Get(r)))
    for (const key of listed.data) assert.equal(key.secret, undefined)
  })
})

// ---------------------------------------------------------------------------
// Role predicates, membership, tokens, scoped secrets
// ---------------------------------------------------------------------------

describe('roles with predicates, membership and tokens', { timeout: 300_000 }, () => {
  let server
  let admin
  let adminSecret
  let users // user documents
  let notes

  before(async () => {
    server = await startServer()
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'abac' }))
    const k = await root.query(q.CreateKey({ database: q.Database('abac'), role: 'admin' }))
    adminSecret = remember(k.secret)
    admin = server.client(adminSecret)
    await admin.query(q.Do(q.CreateCollection({ name: 'users' }), q.CreateCollection({ name: 'notes' })))
    await admin.query(
      q.CreateIndex({ name: 'notes_by_tag', source: q.Collection('notes'), terms: [{ field: ['data', 'tag'] }] })
    )
    users = {}
    for (const name of ['ann', 'bob', 'cid']) {
      users[name] = await admin.query(
        q.Create(q.Collection('users'), {
          data: { name, admin: name === 'ann' },
          credentials: { password: `pw-${name}` },
        })
      )
    }
    notes = {}
    for (const [name, owner, tag, locked] of [
      ['a1', 'ann', 'x', false],
      ['a2', 'ann', 'y', true],
      ['b1', 'bob', 'x', false],
    ]) {
      notes[name] = await admin.query(
        q.Create(q.Collection('notes'), { data: { name, owner: users[owner].ref, tag, locked } })
      )
    }
    // Members of `users` read their own notes, edit unlocked ones (never hand them to
    // someone else), create notes for themselves; read the tag index only for "x".
    await admin.query(
      q.CreateRole({
        name: 'owner',
        membership: [{ resource: q.Collection('users') }],
        privileges: [
          {
            resource: q.Collection('notes'),
            actions: {
              read: q.Query(ref => q.Equals(q.CurrentIdentity(), q.Select(['data', 'owner'], q.Get(ref)))),
              write: q.Query((oldData, newData, ref) =>
                q.And(
                  q.Equals(q.CurrentIdentity(), q.Select(['data', 'owner'], oldData)),
                  q.Equals(q.Select(['data', 'owner'], oldData), q.Select(['data', 'owner'], newData)),
                  q.Not(q.Select(['data', 'locked'], oldData)),
                  q.IsRef(ref)
                )
              ),
              create: q.Query(data => q.Equals(q.CurrentIdentity(), q.Select(['data', 'owner'], data))),
              history_write: q.Query((ref, ts, action, data) =>
                q.And(q.Equals(action, 'create'), q.IsTimestamp(ts), q.IsRef(ref), q.IsObject(data))
              ),
            },
          },
          {
            resource: q.Index('notes_by_tag'),
            actions: { read: q.Query(terms => q.Equals(terms, ['x'])) },
          },
        ],
      })
    )
    // Only admins (data.admin) are members of `moderator`, which reads every note.
    await admin.query(
      q.CreateRole({
        name: 'moderator',
        membership: [{ resource: q.Collection('users'), predicate: q.Query(ref => q.Select(['data', 'admin'], q.Get(ref))) }],
        privileges: [{ resource: q.Collection('notes'), actions: { unrestricted_read: true, read: true } }],
      })
    )
  })

  after(async () => {
    if (server) await server.stop()
  })

  async function tokenClient(name) {
    const t = await admin.query(q.Login(users[name].ref, { password: `pw-${name}` }))
    return server.client(remember(t.secret))
  }

  it('read predicates see the identity; unreadable documents are refused or hidden', async () => {
    const bob = await tokenClient('bob')
    assert.equal((await bob.query(q.Get(notes.b1.ref))).data.name, 'b1')
    await denied(bob.query(q.Get(notes.a1.ref)))
    const page = await bob.query(q.Paginate(q.Documents(q.Collection('notes'))))
    assert.deepEqual(page.data.map(r => r.id), [notes.b1.ref.id])
    assert.equal(await bob.query(q.Exists(notes.a1.ref)), false)
    assert.ok((await bob.query(q.CurrentIdentity())).equals(users.bob.ref))
  })

  it('index read predicates get the terms; elements are filtered by document read', async () => {
    const bob = await tokenClient('bob')
    const x = await bob.query(q.Paginate(q.Match(q.Index('notes_by_tag'), 'x')))
    assert.deepEqual(x.data.map(r => r.id), [notes.b1.ref.id], 'ann\'s x note is hidden from bob')
    await denied(bob.query(q.Paginate(q.Match(q.Index('notes_by_tag'), 'y'))))
  })

  it('membership predicates: only admins are moderators and read everything', async () => {
    const ann = await tokenClient('ann')
    const page = await ann.query(q.Paginate(q.Documents(q.Collection('notes'))))
    assert.equal(page.data.length, 3)
    assert.equal((await ann.query(q.Get(notes.b1.ref))).data.name, 'b1')
    const cid = await tokenClient('cid')
    assert.deepEqual((await cid.query(q.Paginate(q.Documents(q.Collection('notes'))))).data, [])
    // Membership is evaluated per query: demote ann and her next query loses the role.
    await admin.query(q.Update(users.ann.ref, { data: { admin: false } }))
    await denied(ann.query(q.Get(notes.b1.ref)))
    await admin.query(q.Update(users.ann.ref, { data: { admin: true } }))
    assert.equal((await ann.query(q.Get(notes.b1.ref))).data.name, 'b1')
  })

  it('write predicates get [old, new, ref]; create predicates the new data', async () => {
    const bob = await tokenClient('bob')
    await bob.query(q.Update(notes.b1.ref, { data: { text: 'hello' } }))
    await denied(bob.query(q.Update(notes.b1.ref, { data: { owner: users.ann.ref } })))
    await denied(bob.query(q.Update(notes.a1.ref, { data: { text: 'mine now' } })))
    await admin.query(q.Update(notes.b1.ref, { data: { locked: true } }))
    await denied(bob.query(q.Update(notes.b1.ref, { data: { text: 'locked' } })))
    await denied(bob.query(q.Delete(notes.b1.ref)))
    const made = await bob.query(q.Create(q.Collection('notes'), { data: { owner: users.bob.ref, tag: 'x' } }))
    assert.ok(made.ref)
    await denied(bob.query(q.Create(q.Collection('notes'), { data: { owner: users.ann.ref } })))
    // create_with_id falls back to create + history_write(ref, ts, "create", data).
    await bob.query(q.Create(q.Ref(q.Collection('notes'), '77'), { data: { owner: users.bob.ref } }))
    await denied(bob.query(q.Insert(notes.b1.ref, 1, 'update', { data: {} })))
    await bob.query(q.Insert(notes.b1.ref, 1, 'create', { data: { owner: users.bob.ref } }))
  })

  it('tokens: own credentials and tokens; cannot edit themselves; logout', async () => {
    const t = await admin.query(q.Login(users.cid.ref, { password: 'pw-cid' }))
    const cid = server.client(remember(t.secret))
    assert.equal((await cid.query(q.Get(t.ref))).instance.id, users.cid.ref.id)
    await denied(cid.query(q.Update(t.ref, { instance: users.ann.ref })))
    // A token reads its own identity document (by ref, CurrentIdentity() or self), never
    // another user's, and never the credentials field.
    assert.equal((await cid.query(q.Get(users.cid.ref))).data.name, 'cid')
    assert.equal((await cid.query(q.Get(q.CurrentIdentity()))).data.name, 'cid')
    await denied(cid.query(q.Get(users.ann.ref)))
    const self = await cid.query(q.Get(q.Ref(q.Collection('users'), 'self')))
    assert.equal(self.data.name, 'cid')
    assert.equal(self.credentials, undefined)
    assert.equal(await cid.query(q.Logout(false)), true)
    await expectFaunaError(cid.query(q.Now()), 'Unauthorized', 'unauthorized')
    assert.equal(await admin.query(q.Logout(true)), false, 'a key has nothing to log out')
  })

  it('expired tokens are refused', async () => {
    const t = await admin.query(
      q.Login(users.cid.ref, { password: 'pw-cid', ttl: q.TimeAdd(q.Now(), 1, 'second') })
    )
    const c = server.client(remember(t.secret))
    await new Promise(r => setTimeout(r, 1500))
    await expectFaunaError(c.query(q.Now()), 'Unauthorized', 'unauthorized')
  })

  it('scoped secrets: @role/name and @doc/collection/id, only from admin keys', async () => {
    const asOwnerRole = server.client(`${adminSecret}:@role/moderator`)
    assert.equal((await asOwnerRole.query(q.Paginate(q.Documents(q.Collection('notes'))))).data.length >= 3, true)
    await denied(asOwnerRole.query(q.CreateCollection({ name: 'nope' })))
    const asBob = server.client(`${adminSecret}:@doc/users/${users.bob.ref.id}`)
    assert.ok((await asBob.query(q.CurrentIdentity())).equals(users.bob.ref))
    assert.equal(await asBob.query(q.HasCurrentToken()), false)
    await denied(asBob.query(q.Get(notes.a1.ref)))
    await expectFaunaError(
      server.client(`${adminSecret}:@role/missing`).query(q.Now()),
      'Unauthorized',
      'unauthorized'
    )
    const serverKey = await admin.query(q.CreateKey({ role: 'server' }))
    remember(serverKey.secret)
    await expectFaunaError(
      server.client(`${serverKey.secret}:@role/moderator`).query(q.Now()),
      'Unauthorized',
      'unauthorized'
    )
  })

  it('role validation: unknown actions, wrong arity and missing resources are refused', async () => {
    await expectFaunaError(
      admin.query(q.CreateRole({ name: 'bad1', privileges: [{ resource: q.Collection('nope'), actions: { read: true } }] })),
      'BadRequest'
    )
    await expectFaunaError(
      admin.query(q.CreateRole({ name: 'bad2', privileges: [{ resource: q.Collection('notes'), actions: { fly: true } }] })),
      'BadRequest',
      'validation failed'
    )
    await expectFaunaError(
      admin.query(
        q.CreateRole({
          name: 'bad3',
          privileges: [{ resource: q.Collection('notes'), actions: { write: q.Query(q.Lambda(['a', 'b', 'c', 'd'], true)) } }],
        })
      ),
      'BadRequest',
      'validation failed'
    )
    await admin.query(q.CreateRole({ name: 'empty' }))
    const k = await admin.query(q.CreateKey({ role: q.Role('empty') }))
    const c = server.client(remember(k.secret))
    assert.equal(await c.query('works'), 'works')
    await denied(c.query(q.Get(notes.a1.ref)))
  })
})

// ---------------------------------------------------------------------------
// Escalation attempts
// ---------------------------------------------------------------------------

describe('escalation attempts', { timeout: 300_000 }, () => {
  let server
  let root
  let admin
  let adminSecret
  let serverClient

  before(async () => {
    server = await startServer()
    root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'tenant_a' }))
    await root.query(q.CreateDatabase({ name: 'tenant_b' }))
    const ka = await root.query(q.CreateKey({ database: q.Database('tenant_a'), role: 'admin' }))
    adminSecret = remember(ka.secret)
    admin = server.client(adminSecret)
    const ks = await admin.query(q.CreateKey({ role: 'server' }))
    serverClient = server.client(remember(ks.secret))
    await admin.query(q.CreateCollection({ name: 'vault' }))
    await admin.query(q.Create(q.Ref(q.Collection('vault'), '1'), { data: { gold: 100 } }))
  })

  after(async () => {
    if (server) await server.stop()
  })

  it('a server key cannot create, retarget or rewrite an admin-role function', async () => {
    await denied(
      serverClient.query(
        q.CreateFunction({ name: 'root_me', role: 'admin', body: q.Query(q.Lambda('x', q.CreateKey({ role: 'admin' }))) })
      )
    )
    // User-defined roles need an admin too; a missing one is a validation error.
    await admin.query(q.CreateRole({ name: 'anyrole' }))
    await denied(
      serverClient.query(q.CreateFunction({ name: 'custom_me', role: q.Role('anyrole'), body: q.Query(q.Lambda('x', 1)) }))
    )
    await expectFaunaError(
      serverClient.query(q.CreateFunction({ name: 'custom_me', role: q.Role('nope'), body: q.Query(q.Lambda('x', 1)) })),
      'BadRequest',
      'validation failed'
    )
    // server may create functions running as server (or less)...
    await serverClient.query(q.CreateFunction({ name: 'as_server', role: 'server', body: q.Query(q.Lambda('x', 1)) }))
    await denied(serverClient.query(q.Update(q.Function('as_server'), { role: 'admin' })))
    // ...but not touch one an admin made to run as admin.
    await admin.query(q.CreateFunction({ name: 'admin_fn', role: 'admin', body: q.Query(q.Lambda('x', 1)) }))
    await denied(
      serverClient.query(q.Update(q.Function('admin_fn'), { body: q.Query(q.Lambda('x', q.CreateKey({ role: 'admin' }))) }))
    )
    await denied(serverClient.query(q.CreateKey({ role: 'admin' })))
    // A function with the server role cannot mint keys or roles either.
    await admin.query(
      q.CreateFunction({ name: 'mint', role: 'server', body: q.Query(q.Lambda('x', q.CreateKey({ role: 'admin' }))) })
    )
    await callDenied(serverClient.query(q.Call(q.Function('mint'), 1)))
  })

  it('a call-only key cannot read or write documents directly', async () => {
    await admin.query(q.CreateFunction({ name: 'peek', role: 'server', body: q.Query(q.Lambda('x', q.Select(['data', 'gold'], q.Get(q.Ref(q.Collection('vault'), '1'))))) }))
    await admin.query(q.CreateRole({ name: 'caller', privileges: [{ resource: q.Function('peek'), actions: { call: true } }] }))
    const k = await admin.query(q.CreateKey({ role: q.Role('caller') }))
    const c = server.client(remember(k.secret))
    assert.equal(await c.query(q.Call(q.Function('peek'), null)), 100)
    await denied(c.query(q.Get(q.Ref(q.Collection('vault'), '1'))))
    await denied(c.query(q.Update(q.Ref(q.Collection('vault'), '1'), { data: { gold: 0 } })))
    await denied(c.query(q.Create(q.Collection('vault'), { data: {} })))
    await denied(c.query(q.Paginate(q.Collections())))
    await denied(c.query(q.Call(q.Function('as_server'), 1)))
    assert.deepEqual((await c.query(q.Paginate(q.Documents(q.Collection('vault'))))).data, [])
    assert.equal(await c.query(q.Exists(q.Ref(q.Collection('vault'), '1'))), false)
  })

  it('a token of one tenant cannot reach another tenant', async () => {
    const kb = await root.query(q.CreateKey({ database: q.Database('tenant_b'), role: 'admin' }))
    const b = server.client(remember(kb.secret))
    await b.query(q.CreateCollection({ name: 'vault' }))
    await b.query(q.Create(q.Ref(q.Collection('vault'), '1'), { data: { gold: 999 } }))
    await b.query(q.CreateCollection({ name: 'people' }))
    const person = await b.query(q.Create(q.Collection('people'), { credentials: { password: 'pw' } }))
    await b.query(
      q.CreateRole({
        name: 'people',
        membership: [{ resource: q.Collection('people') }],
        privileges: [{ resource: q.Collection('vault'), actions: { read: true } }],
      })
    )
    const tok = await b.query(q.Login(person.ref, { password: 'pw' }))
    const t = server.client(remember(tok.secret))
    assert.equal((await t.query(q.Get(q.Ref(q.Collection('vault'), '1')))).data.gold, 999, 'own tenant')
    // Tenant A is a sibling: no ref from B can name it.
    await expectFaunaError(t.query(q.Get(q.Ref(q.Collection('vault', q.Database('tenant_a')), '1'))), 'BadRequest')
    await expectFaunaError(t.query(q.Paginate(q.Databases())), 'PermissionDenied')
    await denied(t.query(q.CreateDatabase({ name: 'x' })))
    // Scopes on a token are ignored, never a way out.
    const scoped = server.client(`${tok.secret}:tenant_a:admin`)
    assert.equal((await scoped.query(q.Get(q.Ref(q.Collection('vault'), '1')))).data.gold, 999)
  })

  it('a child admin cannot reach its parent', async () => {
    await admin.query(q.CreateDatabase({ name: 'child' }))
    const kc = await admin.query(q.CreateKey({ database: q.Database('child'), role: 'admin' }))
    const child = server.client(remember(kc.secret))
    await expectFaunaError(child.query(q.Get(q.Ref(q.Collection('vault'), '1'))), 'BadRequest', 'invalid ref')
    assert.deepEqual((await child.query(q.Paginate(q.Databases()))).data, [])
    assert.deepEqual((await child.query(q.Paginate(q.Keys()))).data, [])
    await denied(child.query(q.KeyFromSecret(adminSecret)))
    await expectFaunaError(child.query(q.Delete(q.Database('child'))), 'NotFound')
    await expectFaunaError(server.client(`${kc.secret}:..:admin`).query(q.Now()), 'Unauthorized')
    // The parent admin reads into the child, but writes only its own database.
    await child.query(q.CreateCollection({ name: 'c' }))
    await child.query(q.Create(q.Ref(q.Collection('c'), '5'), { data: { v: 1 } }))
    const inChild = q.Ref(q.Collection('c', q.Database('child')), '5')
    assert.equal((await admin.query(q.Get(inChild))).data.v, 1)
    await denied(admin.query(q.Update(inChild, { data: { v: 2 } })))
  })

  it('a function whose role lacks history_write cannot touch old snapshots', async () => {
    await admin.query(
      q.CreateRole({
        name: 'current_only',
        privileges: [{ resource: q.Collection('vault'), actions: { read: true, write: true, create: true } }],
      })
    )
    const before = await admin.query(q.Get(q.Ref(q.Collection('vault'), '1')))
    for (const [name, body] of [
      ['rewrite', q.Insert(q.Ref(q.Collection('vault'), '1'), before.ts, 'update', { data: { gold: 1e6 } })],
      ['erase', q.Remove(q.Ref(q.Collection('vault'), '1'), before.ts, 'create')],
    ]) {
      await admin.query(q.CreateFunction({ name, role: q.Role('current_only'), body: q.Query(q.Lambda('x', body)) }))
      await callDenied(admin.query(q.Call(q.Function(name), null)))
    }
    const after = await admin.query(q.At(before.ts, q.Get(q.Ref(q.Collection('vault'), '1'))))
    assert.equal(after.data.gold, 100, 'history unchanged')
    // The same role may change current data.
    await admin.query(
      q.CreateFunction({
        name: 'deposit',
        role: q.Role('current_only'),
        body: q.Query(q.Lambda('n', q.Update(q.Ref(q.Collection('vault'), '1'), { data: { gold: q.Var('n') } }))),
      })
    )
    await admin.query(q.Call(q.Function('deposit'), 150))
    assert.equal((await admin.query(q.Get(q.Ref(q.Collection('vault'), '1')))).data.gold, 150)
  })

  it('secrets never appear in errors or in the server output', async () => {
    const bogus = 'fnAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
    const e = await expectFaunaError(server.client(bogus).query(q.Now()), 'Unauthorized')
    assert.ok(!safeStringify(errorBody(e)).includes(bogus))
    const e2 = await expectFaunaError(admin.query(q.KeyFromSecret(bogus)), 'NotFound')
    assert.ok(!safeStringify(errorBody(e2)).includes(bogus))
    const log = server.logTail(10_000_000)
    for (const s of SECRETS) assert.ok(!log.includes(s), 'a secret leaked into the server output')
  })

  it('the data directory (input log included) holds no secret and no literal password', async () => {
    const password = 'correct-horse-battery-staple-42'
    await admin.query(q.CreateCollection({ name: 'people' }))
    const p = await admin.query(q.Create(q.Collection('people'), { credentials: { password } }))
    const t = await admin.query(q.Login(p.ref, { password }))
    remember(t.secret)
    assert.equal(await admin.query(q.Identify(p.ref, password)), true)
    await admin.query(q.Update(p.ref, { credentials: { password: password + '!' } }))
    const k = await admin.query(q.CreateKey({ role: 'server' }))
    remember(k.secret)
    const needles = [password, ...SECRETS].map(s => Buffer.from(s))
    const walk = dir =>
      fs.readdirSync(dir, { withFileTypes: true }).flatMap(e =>
        e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]
      )
    const files = walk(server.dataDir)
    assert.ok(files.length > 0)
    for (const f of files) {
      const bytes = fs.readFileSync(f)
      for (const n of needles) assert.equal(bytes.indexOf(n), -1, `${path.basename(f)} holds a secret or password`)
    }
  })
})

// ---------------------------------------------------------------------------
// Password digests and secret placeholders cannot be forged
// ---------------------------------------------------------------------------

/** The files of a directory tree. */
function walkFiles(dir) {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap(e => (e.isDirectory() ? walkFiles(path.join(dir, e.name)) : [path.join(dir, e.name)]))
}

/** `[tag, digest]` of every password marker the receiving node wrote into the data directory. */
function loggedDigests(dataDir) {
  // The digest object as the transaction record encodes it (docs/record.md: an object of two
  // keys, each value a string of 64 bytes). Version 2 writes each key and string as a
  // `name`, varint 2 × length then the bytes (0x2a for 21, 0x80 0x01 for 64, 0x06 for 3);
  // version 1 wrote a varint length then the bytes; version 0 was JSON text.
  const v2 = /\x08\x02\x2atally_password_digest\x06\x80\x01([0-9a-f]{64})\x06tag\x06\x80\x01([0-9a-f]{64})/g
  const v1 = /\x08\x02\x15tally_password_digest\x06@([0-9a-f]{64})\x03tag\x06@([0-9a-f]{64})/g
  const json = /\{"tally_password_digest":"([0-9a-f]{64})","tag":"([0-9a-f]{64})"\}/g
  return walkFiles(dataDir).flatMap(f => {
    const text = fs.readFileSync(f).toString('latin1')
    return [...text.matchAll(v2), ...text.matchAll(v1), ...text.matchAll(json)].map(m => [m[2], m[1]])
  })
}

/** `\0tally-secret:` + base64url(kind | db | id): the placeholder of the key or token a secret belongs to. */
function placeholderOf(secret) {
  const raw = Buffer.from(secret.slice(2), 'base64url')
  return '\u0000tally-secret:' + raw.subarray(0, 17).toString('base64url')
}

describe('password digests and secret placeholders', { timeout: 300_000 }, () => {
  let server
  let admin
  let person
  const password = 'digest-forgery-pw-1'

  before(async () => {
    server = await startServer()
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'tenant' }))
    const k = await root.query(q.CreateKey({ database: q.Database('tenant'), role: 'admin' }))
    admin = server.client(remember(k.secret))
    await admin.query(q.CreateCollection({ name: 'people' }))
    await admin.query(q.CreateCollection({ name: 'notes' }))
    person = (await admin.query(q.Create(q.Collection('people'), { credentials: { password } }))).ref
    remember((await admin.query(q.Login(person, { password }))).secret)
  })

  after(async () => {
    if (server) await server.stop()
  })

  const reserved = async promise => {
    const e = await expectFaunaError(promise, 'BadRequest', 'invalid expression')
    assert.match(errorBody(e).errors[0].description, /tally_password_digest` is reserved/)
  }

  it('a digest read from the input log logs nobody in and sets no password', async () => {
    const logged = loggedDigests(server.dataDir)
    assert.ok(logged.length >= 2, 'the log holds the digests of the create and the login')
    for (const [tag, digest] of logged) {
      const marker = new faunadb.Expr({ tally_password_digest: digest, tag })
      await reserved(admin.query(q.Login(person, { password: marker })))
      await reserved(admin.query(q.Identify(person, marker)))
      await reserved(admin.query(q.Update(person, { credentials: { password: marker } })))
      // Without a tag, or with one made up.
      await reserved(admin.query(q.Login(person, { password: new faunadb.Expr({ tally_password_digest: digest }) })))
      const madeUp = new faunadb.Expr({ tally_password_digest: digest, tag: '00'.repeat(32) })
      await reserved(admin.query(q.Login(person, { password: madeUp })))
      // In a write that runs before the marker (so the executor meets it, not the read-only pass).
      await reserved(admin.query(q.Do(q.Create(q.Collection('notes'), {}), q.Login(person, { password: marker }))))
      // As the Bytes value the marker evaluates to: just bytes, not a password.
      const bytes = new faunadb.values.Bytes(Buffer.concat([Buffer.from([0xa5]), Buffer.from(digest + tag, 'hex')]))
      await expectFaunaError(admin.query(q.Login(person, { password: bytes })), 'BadRequest', 'invalid argument')
      await expectFaunaError(admin.query(q.Identify(person, bytes)), 'BadRequest', 'invalid argument')
      // Hidden in a stored function body, where it would run in a later transaction.
      const name = 'replay_' + tag.slice(0, 8)
      await admin.query(
        q.CreateFunction({ name, body: q.Query(q.Lambda('r', q.Login(q.Var('r'), { password: marker }))) })
      )
      const e = await expectFaunaError(admin.query(q.Call(q.Function(name), person)), 'BadRequest')
      assert.match(safeStringify(errorBody(e)), /tally_password_digest` is reserved/)
    }
    // The password is unchanged and still works, however it is written.
    assert.equal(await admin.query(q.Identify(person, password)), true)
    remember((await admin.query(q.Login(person, { password: q.Concat(['digest-forgery', 'pw-1'], '-') }))).secret)
  })

  it('a password built by Concat of literals is logged as a digest', async () => {
    const parts = ['concat-left-part-', 'concat-right-part']
    const p = await admin.query(q.Create(q.Collection('people'), { credentials: { password: q.Concat(parts) } }))
    remember((await admin.query(q.Login(p.ref, { password: parts.join('') }))).secret)
    for (const f of walkFiles(server.dataDir)) {
      const bytes = fs.readFileSync(f)
      for (const part of parts) assert.equal(bytes.indexOf(part), -1, `${path.basename(f)} holds a password part`)
    }
  })

  it('a new secret inside a larger string or an object key comes back whole, and works', async () => {
    const s = await admin.query(q.Concat(['key=', q.Select('secret', q.CreateKey({ role: 'server' }))]))
    assert.match(s, /^key=fn[A-Za-z0-9_-]+$/)
    const secret = remember(s.slice('key='.length))
    assert.ok(await server.client(secret).query(q.Exists(q.Collection('notes'))))
    const o = await admin.query(q.ToObject([[q.Select('secret', q.CreateKey({ role: 'server' })), 1]]))
    const [key] = Object.keys(o)
    assert.match(key, /^fn[A-Za-z0-9_-]+$/)
    assert.ok(await server.client(remember(key)).query(q.Exists(q.Collection('notes'))))
    const both = await admin.query(
      q.Let(
        { a: q.CreateKey({ role: 'server' }), b: q.Login(person, { password }) },
        q.Format('%s|%s', q.Select('secret', q.Var('a')), q.Select('secret', q.Var('b')))
      )
    )
    for (const part of both.split('|')) {
      assert.match(part, /^fn[A-Za-z0-9_-]+$/)
      await server.client(remember(part)).query(q.Now())
    }
  })

  it('a placeholder written by a client is never turned into a secret', async () => {
    // The placeholder of a key that exists (this suite's admin key), stored as data.
    const [someone] = [...SECRETS]
    const forged = placeholderOf(someone)
    const note = await admin.query(q.Create(q.Collection('notes'), { data: { s: forged, t: `x${forged}y` } }))
    // Read back in a transaction that issues a secret (so reveal runs on its answer).
    const r = await admin.query(
      q.Let({ k: q.CreateKey({ role: 'server' }), n: q.Get(note.ref) }, [q.Select('secret', q.Var('k')), q.Var('n')])
    )
    remember(r[0])
    assert.equal(r[1].data.s, forged)
    assert.equal(r[1].data.t, `x${forged}y`)
    // And echoed in one query with the placeholder of the key being issued: only the
    // issued one is completed.
    const echo = await admin.query(q.Let({ k: q.CreateKey({ role: 'server' }) }, [q.Select('secret', q.Var('k')), forged]))
    remember(echo[0])
    assert.equal(echo[1], forged)
  })

  it('a new secret cannot be stored in a document', async () => {
    const before = await admin.query(q.Count(q.Keys()))
    await expectFaunaError(
      admin.query(q.Create(q.Collection('notes'), { data: { s: q.Select('secret', q.CreateKey({ role: 'server' })) } })),
      'BadRequest',
      'invalid argument'
    )
    assert.equal(await admin.query(q.Count(q.Keys())), before, 'nothing was written')
  })
})

// ---------------------------------------------------------------------------
// The Animal Exchange behind call-only browser keys
// ---------------------------------------------------------------------------

const PLAYERS = [
  { name: 'Alice', credits: 1000 },
  { name: 'Bob', credits: 1000 },
  { name: 'Carol', credits: 50 },
]

// The app's purchase transaction, now the body of a UDF taking (item, buyer) refs.
function purchaseBody(item, buyer) {
  return q.Let(
    { buyer: q.Get(buyer), item: q.Get(item) },
    q.Let(
      {
        buyerBalance: q.Select(['data', 'credits'], q.Var('buyer')),
        itemPrice: q.Select(['data', 'price'], q.Var('item')),
        isForSale: q.Select(['data', 'for_sale'], q.Var('item')),
        seller: q.Get(q.Select(['data', 'owner'], q.Var('item'))),
      },
      q.If(
        q.Not(q.Var('isForSale')),
        'Purchase failed: item not for sale',
        q.If(
          q.Equals(q.Select('ref', q.Var('buyer')), q.Select('ref', q.Var('seller'))),
          q.Do(q.Update(q.Select('ref', q.Var('item')), { data: { for_sale: false } }), 'Item removed from sale'),
          q.If(
            q.LT(q.Var('buyerBalance'), q.Var('itemPrice')),
            'Purchase failed: insufficient funds',
            q.Do(
              q.Create(q.Collection('purchases'), {
                data: {
                  item: q.Select('ref', q.Var('item')),
                  price: q.Var('itemPrice'),
                  buyer: q.Select('ref', q.Var('buyer')),
                  seller: q.Select('ref', q.Var('seller')),
                },
              }),
              q.Update(q.Select('ref', q.Var('buyer')), {
                data: { credits: q.Subtract(q.Var('buyerBalance'), q.Var('itemPrice')) },
              }),
              q.Update(q.Select('ref', q.Var('seller')), {
                data: { credits: q.Add(q.Select(['data', 'credits'], q.Var('seller')), q.Var('itemPrice')) },
              }),
              q.Update(q.Select('ref', q.Var('item')), {
                data: { owner: q.Select('ref', q.Var('buyer')), for_sale: false },
              }),
              'Purchase success!'
            )
          )
        )
      )
    )
  )
}

function listMarketBody() {
  return q.Select(
    'data',
    q.Map(q.Paginate(q.Match(q.Index('items_for_sale'), true), { size: 1000 }), row =>
      q.Let(
        { doc: q.Get(row) },
        {
          ref: q.Select('ref', q.Var('doc')),
          label: q.Select(['data', 'label'], q.Var('doc')),
          price: q.Select(['data', 'price'], q.Var('doc')),
          owner: q.Select(['data', 'owner'], q.Var('doc')),
          owner_name: q.Select(['data', 'name'], q.Get(q.Select(['data', 'owner'], q.Var('doc')))),
        }
      )
    )
  )
}

describe('Animal Exchange behind a call-only browser key', { timeout: 600_000 }, () => {
  let server
  let admin
  let browser // the only secret the browser holds
  let players
  let items

  before(async () => {
    server = await startServer()
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'exchange' }))
    const k = await root.query(q.CreateKey({ database: q.Database('exchange'), role: 'admin' }))
    admin = server.client(remember(k.secret))
    await admin.query(
      q.Do(
        q.CreateCollection({ name: 'players' }),
        q.CreateCollection({ name: 'items' }),
        q.CreateCollection({ name: 'purchases' })
      )
    )
    await admin.query(
      q.Do(
        q.CreateIndex({ name: 'items_for_sale', source: q.Collection('items'), terms: [{ field: ['data', 'for_sale'] }] }),
        q.CreateIndex({ name: 'all_purchases', source: q.Collection('purchases') })
      )
    )
    players = await admin.query(q.Map(PLAYERS, p => q.Create(q.Collection('players'), { data: p })))
    const [alice, bob, carol] = players.map(p => p.ref)
    items = await admin.query(
      q.Map(
        [
          { label: 'Dog', for_sale: true, owner: alice, price: 200 },
          { label: 'Cat', for_sale: false, owner: alice, price: 75 },
          { label: 'Cow', for_sale: true, owner: bob, price: 500 },
          { label: 'Pig', for_sale: true, owner: bob, price: 60 },
          { label: 'Chicken', for_sale: true, owner: carol, price: 20 },
        ],
        i => q.Create(q.Collection('items'), { data: i })
      )
    )
    // The functions run with a role that may change current data of the three
    // collections and read the index: no schema, no history, no keys.
    await admin.query(
      q.CreateRole({
        name: 'market',
        privileges: [
          { resource: q.Collection('players'), actions: { read: true, write: true } },
          { resource: q.Collection('items'), actions: { read: true, write: true } },
          { resource: q.Collection('purchases'), actions: { read: true, create: true } },
          { resource: q.Index('items_for_sale'), actions: { read: true } },
        ],
      })
    )
    await admin.query(
      q.CreateFunction({
        name: 'purchase',
        role: q.Role('market'),
        body: q.Query(q.Lambda(['item', 'buyer'], purchaseBody(q.Var('item'), q.Var('buyer')))),
      })
    )
    await admin.query(
      q.CreateFunction({ name: 'list_market', role: q.Role('market'), body: q.Query(q.Lambda([], listMarketBody())) })
    )
    await admin.query(
      q.CreateRole({
        name: 'browser',
        privileges: [
          { resource: q.Function('purchase'), actions: { call: true } },
          { resource: q.Function('list_market'), actions: { call: true } },
        ],
      })
    )
    const bk = await admin.query(q.CreateKey({ role: q.Role('browser'), data: { name: 'browser' } }))
    browser = server.client(remember(bk.secret))
  })

  after(async () => {
    if (server) await server.stop()
  })

  const byLabel = label => items.find(i => i.data.label === label).ref
  const player = name => players.find(p => p.data.name === name).ref
  const purchase = (item, buyer) => browser.query(q.Call(q.Function('purchase'), item, buyer))

  it('list_market() lists what is for sale with owner names', async () => {
    const market = await browser.query(q.Call(q.Function('list_market')))
    assert.deepEqual(
      market.map(m => [m.label, m.price, m.owner_name]).sort(),
      [['Chicken', 20, 'Carol'], ['Cow', 500, 'Bob'], ['Dog', 200, 'Alice'], ['Pig', 60, 'Bob']].sort()
    )
  })

  it('purchase(item, buyer) runs every branch of the app', async () => {
    assert.equal(await purchase(byLabel('Cat'), player('Bob')), 'Purchase failed: item not for sale')
    assert.equal(await purchase(byLabel('Cow'), player('Carol')), 'Purchase failed: insufficient funds')
    assert.equal(await purchase(byLabel('Dog'), player('Bob')), 'Purchase success!')
    assert.equal(await purchase(byLabel('Pig'), player('Bob')), 'Item removed from sale')
    const credits = await admin.query(q.Map(players.map(p => p.ref), r => q.Select(['data', 'credits'], q.Get(r))))
    assert.deepEqual(credits, [1200, 800, 50])
    const bought = await admin.query(q.Map(q.Paginate(q.Match(q.Index('all_purchases'))), r => q.Get(r)))
    assert.equal(bought.data.length, 1)
    assert.ok(bought.data[0].data.buyer.equals(player('Bob')))
    const market = await browser.query(q.Call(q.Function('list_market')))
    assert.deepEqual(market.map(m => m.label).sort(), ['Chicken', 'Cow'])
  })

  it('concurrent purchases through the function conserve credits', async () => {
    await admin.query(q.Update(byLabel('Cow'), { data: { for_sale: true, price: 10 } }))
    await admin.query(q.Update(byLabel('Chicken'), { data: { for_sale: true, price: 10 } }))
    const jobs = []
    for (let i = 0; i < 60; i++) {
      const item = i % 2 ? byLabel('Cow') : byLabel('Chicken')
      const buyer = players[i % 3].ref
      jobs.push(purchase(item, buyer))
    }
    const results = await Promise.all(jobs)
    assert.ok(results.filter(r => r === 'Purchase success!').length <= 2, 'each item sells at most once')
    const credits = await admin.query(q.Map(players.map(p => p.ref), r => q.Select(['data', 'credits'], q.Get(r))))
    assert.equal(credits.reduce((a, b) => a + b, 0), 2050, 'credits conserved')
  })

  it('the browser key is refused every direct read and write', async () => {
    const item = byLabel('Dog')
    const p = player('Alice')
    const attempts = {
      'Get item': q.Get(item),
      'Get player': q.Get(p),
      'Get index set': q.Get(q.Match(q.Index('items_for_sale'), true)),
      'Paginate index': q.Paginate(q.Match(q.Index('items_for_sale'), true)),
      'Paginate collections': q.Paginate(q.Collections()),
      'Paginate functions': q.Paginate(q.Functions()),
      'Paginate keys': q.Paginate(q.Keys()),
      'Events of item': q.Paginate(q.Events(item)),
      'Create purchase': q.Create(q.Collection('purchases'), { data: { price: 0 } }),
      'Create item with id': q.Create(q.Ref(q.Collection('items'), '1'), { data: {} }),
      'Update credits': q.Update(p, { data: { credits: 1e9 } }),
      'Replace item': q.Replace(item, { data: { owner: p } }),
      'Delete item': q.Delete(item),
      'Insert history': q.Insert(item, 1, 'create', { data: {} }),
      'Remove history': q.Remove(item, 1, 'create'),
      'Create collection': q.CreateCollection({ name: 'x' }),
      'Create function': q.CreateFunction({ name: 'x', body: q.Query(q.Lambda('x', 1)) }),
      'Rewrite purchase': q.Update(q.Function('purchase'), { body: q.Query(q.Lambda(['a', 'b'], 1)) }),
      'Get function': q.Get(q.Function('purchase')),
      'Create key': q.CreateKey({ role: 'admin' }),
      'Create role': q.CreateRole({ name: 'x' }),
      'Create database': q.CreateDatabase({ name: 'x' }),
      'Create token': q.Create(q.Tokens(), { instance: p }),
    }
    for (const [what, query] of Object.entries(attempts)) {
      await denied(browser.query(query)).catch(e => {
        throw new Error(`${what}: ${e.message}`)
      })
    }
    assert.deepEqual((await browser.query(q.Paginate(q.Documents(q.Collection('items'))))).data, [])
    assert.equal(await browser.query(q.Exists(item)), false)
    // Calling is allowed; nothing the function returns hands out more than it should.
    assert.ok(Array.isArray(await browser.query(q.Call(q.Function('list_market')))))
  })

  it('the server output never holds a secret', () => {
    const log = server.logTail(10_000_000)
    for (const s of SECRETS) assert.ok(!log.includes(s))
  })
})
