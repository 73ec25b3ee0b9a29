'use strict'
// The last FQL v4 gaps (issue 15, item 4), through the official npm driver and raw HTTP:
// path-string refs and self refs, Identity()/HasIdentity(), CurrentToken() for keys,
// Query values in v4's shape, x-fauna-tags in v4's order and with v4's errors, and
// 401 answers with v4's challenge.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startServer, expectFaunaError, q, faunadb } = require('./helpers/server')

let server
let admin
let user // { ref, token }

const invalidExpr = p => expectFaunaError(p, 'BadRequest', 'invalid expression')

describe('v4 gaps', () => {
  before(async () => {
    server = await startServer()
    admin = server.adminClient()
    await admin.query(q.Do(q.CreateCollection({ name: 'widget' }), q.CreateCollection({ name: 'users' })))
    await admin.query(q.CreateIndex({ name: 'widget_by_n', source: q.Collection('widget') }))
    await admin.query(q.Create(q.Ref(q.Collection('widget'), '123'), { data: { n: 1 } }))
    const u = await admin.query(q.Create(q.Collection('users'), { credentials: { password: 'pw' }, data: { n: 'u' } }))
    const tok = await admin.query(q.Login(u.ref, { password: 'pw' }))
    user = { ref: u.ref, token: tok }
  })
  after(() => server && server.stop())

  it('path-string refs name the same documents and schema as Ref objects', async () => {
    const doc = await admin.query(q.Get(q.Ref('collections/widget/123')))
    assert.deepEqual(doc.data, { n: 1 })
    assert.ok(doc.ref.equals(q.Ref(q.Collection('widget'), '123')) || doc.ref.id === '123')
    assert.equal(await admin.query(q.Equals(q.Ref('classes/widget/123'), q.Ref(q.Collection('widget'), '123'))), true)
    assert.equal(await admin.query(q.Equals(q.Ref('collections/widget'), q.Collection('widget'))), true)
    assert.equal(await admin.query(q.Equals(q.Ref('indexes/widget_by_n'), q.Index('widget_by_n'))), true)
    assert.equal(await admin.query(q.Equals(q.Ref('collections'), q.Collections())), true)
    assert.equal(await admin.query(q.Equals(q.Ref('keys'), q.Keys())), true)
    assert.equal(await admin.query(q.Exists(q.Ref('collections/widget/124'))), false)
    // Inside a stored function body too.
    await admin.query(q.CreateFunction({ name: 'get123', body: q.Query(q.Lambda('_', q.Select(['data', 'n'], q.Get(q.Ref('collections/widget/123'))))) }))
    assert.equal(await admin.query(q.Call(q.Function('get123'), null)), 1)
    for (const bad of ['collections/widget/abc', 'widgets/1', 'collections/self/1', 'collections/widget/1/events', 'keys/self']) {
      const e = await invalidExpr(admin.query(q.Ref(bad)))
      assert.match(e.requestResult.responseContent.errors[0].description, /ref|Events/i, bad)
    }
  })

  it('self refs resolve to the caller’s own token, credentials and identity', async () => {
    const tc = server.client(user.token.secret)
    const tokenRef = await tc.query(q.Ref('tokens/self'))
    assert.equal(tokenRef.id, user.token.ref.id)
    assert.equal(tokenRef.collection.id, 'tokens')
    assert.ok(await tc.query(q.Equals(q.Ref('tokens/self'), q.CurrentToken())))
    const me = await tc.query(q.Ref('collections/users/self'))
    assert.equal(me.id, user.ref.id)
    assert.ok(await tc.query(q.Equals(q.Ref(q.Collection('users'), 'self'), q.CurrentIdentity())))
    const creds = await tc.query(q.Ref('credentials/self'))
    assert.equal(creds.collection.id, 'credentials')
    const credDoc = await admin.query(q.Get(creds))
    assert.equal(credDoc.instance.id, user.ref.id, 'credentials/self is the identity’s credentials document')
    // A token reads its own identity document (no role needed), but no one else's.
    assert.equal((await tc.query(q.Get(q.CurrentIdentity()))).data.n, 'u')
    assert.equal((await tc.query(q.Get(q.Ref('collections/users/self')))).data.n, 'u')
    const other = await admin.query(q.Create(q.Collection('users'), { data: { n: 'other' } }))
    await expectFaunaError(tc.query(q.Get(other.ref)), 'PermissionDenied', 'permission denied')
    // A token may read its own credentials and token (v4's baseline).
    assert.equal((await tc.query(q.Get(q.Ref('credentials/self')))).instance.id, user.ref.id)
    assert.equal((await tc.query(q.Get(q.Ref('tokens/self')))).instance.id, user.ref.id)

    // Nothing to resolve to: a key has no token or identity; another collection's self
    // is not this identity; a token made without Login for a document without
    // credentials has no credentials.
    await invalidExpr(admin.query(q.Ref('tokens/self')))
    await invalidExpr(admin.query(q.Ref('credentials/self')))
    await invalidExpr(admin.query(q.Ref('collections/users/self')))
    await invalidExpr(tc.query(q.Ref('collections/widget/self')))
    const bare = await admin.query(q.Create(q.Collection('users'), { data: { n: 'no password' } }))
    const t2 = await admin.query(q.Create(q.Tokens(), { instance: bare.ref }))
    const t2c = server.client(t2.secret)
    assert.equal((await t2c.query(q.Ref('tokens/self'))).id, t2.ref.id)
    await invalidExpr(t2c.query(q.Ref('credentials/self')))
  })

  it('Identity() and HasIdentity() are v4’s older names of CurrentIdentity() and HasCurrentIdentity()', async () => {
    const tc = server.client(user.token.secret)
    assert.equal((await tc.query(q.Identity())).id, user.ref.id)
    assert.equal(await tc.query(q.HasIdentity()), true)
    assert.equal(await admin.query(q.HasIdentity()), false)
    await expectFaunaError(admin.query(q.Identity()), 'BadRequest', 'missing identity')
  })

  it('CurrentToken() is a key’s ref for a key used in its own database, and refused otherwise', async () => {
    const key = await admin.query(q.CreateKey({ role: 'server' }))
    const kc = server.client(key.secret)
    const ref = await kc.query(q.CurrentToken())
    assert.equal(ref.id, key.ref.id)
    assert.equal(ref.collection.id, 'keys')
    assert.equal(await kc.query(q.HasCurrentToken()), true)
    const adminKey = await admin.query(q.CreateKey({ role: 'admin' }))
    const ac = server.client(adminKey.secret)
    assert.equal((await ac.query(q.Get(q.CurrentToken()))).ref.id, adminKey.ref.id)

    // A key made in the parent for a child database: no token metadata, as in v4.
    await admin.query(q.CreateDatabase({ name: 'child' }))
    const childKey = await admin.query(q.CreateKey({ database: q.Database('child'), role: 'admin' }))
    const cc = server.client(childKey.secret)
    assert.equal(await cc.query(q.HasCurrentToken()), false)
    const e = await expectFaunaError(cc.query(q.CurrentToken()), 'Unauthorized', 'invalid token')
    assert.match(e.requestResult.responseContent.errors[0].description, /Token metadata is not accessible/)
    // The root key is not a document either.
    await expectFaunaError(admin.query(q.CurrentToken()), 'Unauthorized', 'invalid token')
    // A scoped admin key acts elsewhere: no token.
    const scoped = server.client(`${adminKey.secret}:child:admin`)
    assert.equal(await scoped.query(q.HasCurrentToken()), false)
    // The key's ref travels with a write (the executor sees the same CurrentToken()).
    const w = await kc.query(q.Create(q.Collection('widget'), { data: { by: q.CurrentToken() } }))
    assert.equal(w.data.by.id, key.ref.id)
  })

  it('Query values come back in v4’s shape and run again when sent back', async () => {
    // Bindings whose sorted order differs from their written order: b uses a.
    const body = q.Query(q.Lambda('x', q.Let({ b: 1, a: q.Add(q.Var('b'), 1) }, q.Add(q.Var('x'), q.Var('a')))))
    await admin.query(q.CreateFunction({ name: 'addtwo', body }))
    const res = await server.raw(JSON.stringify({ select: ['body'], from: { get: { function: 'addtwo' } } }))
    assert.equal(res.status, 200, res.body)
    const text = res.body
    const at = k => text.indexOf(`"${k}"`)
    assert.ok(at('api_version') < at('lambda') && at('lambda') < at('expr'), `api_version, lambda, expr: ${text}`)
    const wire = JSON.parse(text).resource['@query']
    assert.equal(wire.api_version, '4')
    assert.deepEqual(Object.keys(wire.expr), ['let', 'in'])
    assert.deepEqual(Object.keys(wire.expr.let), ['b', 'a'], 'bindings in the order written, as one object')
    // Send the rendered body back: a new function made from it computes the same thing.
    const fetched = await admin.query(q.Select(['body'], q.Get(q.Function('addtwo'))))
    await admin.query(q.CreateFunction({ name: 'addtwo_copy', body: fetched }))
    assert.equal(await admin.query(q.Call(q.Function('addtwo_copy'), 5)), 7)
    assert.equal(await admin.query(q.Call(q.Function('addtwo'), 5)), 7)
  })

  it('x-fauna-tags: echoed in v4’s order, refused with v4’s messages', async () => {
    const send = tags => server.raw('1', { headers: { 'x-fauna-tags': tags } })
    const ok = await send('a=1,b_2=x,c=3')
    assert.equal(ok.status, 200)
    assert.equal(ok.headers['x-fauna-tags'], 'c=3,b_2=x,a=1')
    const empty = await send('')
    assert.equal(empty.status, 200)
    assert.equal(empty.headers['x-fauna-tags'], undefined)
    const cases = [
      ['foo,,', 'invalid tags'],
      ['a=1,b', 'invalid tags'],
      ['a=é', 'invalid tags'],
      [Array.from({ length: 26 }, (_, i) => `k${i}=v`).join(','), 'too many tags'],
      [`${'k'.repeat(41)}=v`, 'invalid key'],
      [`k=${'v'.repeat(81)}`, 'invalid value'],
      ['a=1,a=2', 'duplicate key'],
      [`a=${'v'.repeat(3001)}`, 'header is too long'],
    ]
    for (const [tags, reason] of cases) {
      const r = await send(tags)
      assert.equal(r.status, 400, tags)
      assert.deepEqual(JSON.parse(r.body), {
        errors: [{ code: 'bad request', description: `Invalid header 'x-fauna-tags': ${reason}` }],
      })
    }
    // Through the driver as well.
    const c = server.adminClient()
    await expectFaunaError(c.query(q.Add(1, 1), { tags: { 'bad-key': '1' } }), 'BadRequest', 'bad request')
  })

  it('401 answers carry v4’s challenge and an errors body the drivers read', async () => {
    for (const headers of [{ authorization: 'Bearer not-a-secret' }, {}]) {
      const r = await server.raw('1', { secret: null, headers })
      assert.equal(r.status, 401)
      assert.equal(r.headers['www-authenticate'], 'Basic realm="Unauthorized"')
      const body = JSON.parse(r.body)
      assert.equal(body.errors[0].code, 'unauthorized')
      assert.equal(typeof body.errors[0].description, 'string')
    }
    const bad = new faunadb.Client({ secret: 'nope', domain: '127.0.0.1', port: server.port, scheme: 'http' })
    await expectFaunaError(bad.query(q.Add(1, 1)), 'Unauthorized', 'unauthorized')
    await bad.close()
  })

  it('access providers: only admin may create them, with v4’s status', async () => {
    const server_ = await admin.query(q.CreateKey({ role: 'server' }))
    const sc = server.client(server_.secret)
    await expectFaunaError(
      sc.query(q.CreateAccessProvider({ name: 'ap', issuer: 'https://issuer.example', jwks_uri: 'https://issuer.example/jwks' })),
      'PermissionDenied',
      'permission denied'
    )
    const ap = await admin.query(
      q.CreateAccessProvider({ name: 'ap', issuer: 'https://issuer.example', jwks_uri: 'https://issuer.example/jwks' })
    )
    assert.equal(ap.name, 'ap')
    assert.equal(typeof ap.audience, 'string')
    // Issuers are unique: v4's `duplicate value` failure on `issuer`.
    const dup = await expectFaunaError(
      admin.query(q.CreateAccessProvider({ name: 'ap2', issuer: 'https://issuer.example', jwks_uri: 'https://issuer.example/jwks' })),
      'BadRequest',
      'validation failed'
    )
    const failures = dup.requestResult.responseContent.errors[0].failures
    assert.deepEqual(failures.map(f => [f.field, f.code]), [[['issuer'], 'duplicate value']])
  })
})
