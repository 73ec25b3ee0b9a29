'use strict'
// Issue 12 (items 2, 7, 8, 9, 10 and the notes on Basic auth and /admin/faults), each
// attack reproduced through the official driver (or plain HTTP where a browser or an
// attacker would use it) against a real server:
//
//  2. index bindings are pure: a binding that reads, writes or calls is refused when
//     the index is written, and one that still reads at run time neither runs with the
//     writer's authority nor blocks the writer — the permission matrix over bindings;
//  7. a parent's server key cannot run a child database's functions;
//  8. a parent's client key cannot Identify or Login against a child's documents;
//  9. jwks_uri cannot make the server fetch from loopback (SSRF) without the operator's
//     --jwks-allow-private;
// 10. /ledger/head needs the root key (or a root admin key) and sends no CORS headers;
//  -  Basic auth keeps a scoped secret whole; /admin/faults needs the root key.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const net = require('node:net')
const {
  startServer,
  expectFaunaError,
  rawRequest,
  q,
  safeStringify,
  HOST,
} = require('./helpers/server')
const { TallyCluster } = require('./helpers/cluster')

const denied = p => expectFaunaError(p, 'PermissionDenied', 'permission denied')

/** The first failure of a `validation failed` error. */
async function invalidBinding(promise) {
  const e = await expectFaunaError(promise, 'BadRequest', 'validation failed')
  const failures = e.requestResult.responseContent.errors[0].failures || []
  assert.equal(failures[0] && failures[0].code, 'invalid binding', safeStringify(failures))
  return failures[0]
}

const binding = body => q.Query(q.Lambda('doc', body))

// ---------------------------------------------------------------------------
// 2. Index bindings
// ---------------------------------------------------------------------------

describe('index bindings are pure functions of the document', { timeout: 300_000 }, () => {
  let server
  let admin
  let keys // role -> {client, ref}

  before(async () => {
    server = await startServer()
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'shop' }))
    const ak = await root.query(q.CreateKey({ database: q.Database('shop'), role: 'admin' }))
    admin = server.client(ak.secret)
    await admin.query(q.CreateCollection({ name: 'items', permissions: { create: 'public' } }))
    await admin.query(q.CreateCollection({ name: 'secrets' }))
    await admin.query(q.CreateIndex({ name: 'secrets_all', source: q.Collection('secrets') }))
    await admin.query(q.Create(q.Collection('secrets'), { data: { code: 'x' } }))
    await admin.query(q.CreateFunction({ name: 'noop', body: q.Query(q.Lambda('x', q.Var('x'))) }))
    await admin.query(
      q.CreateRole({
        name: 'clerk',
        privileges: [{ resource: q.Collection('items'), actions: { create: true, read: true } }],
      })
    )
    keys = {}
    for (const role of ['admin', 'server', 'client']) {
      const k = await admin.query(q.CreateKey({ role, data: { who: role } }))
      keys[role] = { client: server.client(k.secret), ref: k.ref }
    }
    const ck = await admin.query(q.CreateKey({ role: q.Role('clerk') }))
    keys.custom = { client: server.client(ck.secret), ref: ck.ref }
  })

  after(async () => {
    if (server) await server.stop()
  })

  it('the escalation through a binding is refused when the index is created', async () => {
    // The attack: a server key plants a binding that promotes its own key the
    // next time an admin writes into the collection.
    const me = keys.server.ref
    const evil = binding(
      q.If(q.Exists(me), q.Do(q.Update(me, { role: 'admin' }), 1), 0)
    )
    const f = await invalidBinding(
      keys.server.client.query(
        q.CreateIndex({
          name: 'evil',
          source: { collection: q.Collection('items'), fields: { x: evil } },
          terms: [{ binding: 'x' }],
        })
      )
    )
    assert.deepEqual(f.field, ['source', '0', 'fields', 'x'])
    assert.match(f.description, /pure unary function/)
    // An admin writes; the server key is still a server key.
    await admin.query(q.Create(q.Collection('items'), { data: { n: 1 } }))
    await denied(keys.server.client.query(q.CreateKey({ role: 'admin' })))
    assert.equal((await admin.query(q.Get(me))).role, 'server')
  })

  // The matrix: every kind of impure binding × every role that may create indexes, at
  // create time and at update time.
  const IMPURE = {
    get: () => q.Select(['data', 'code'], q.Get(q.Ref(q.Collection('secrets'), '1'))),
    exists: () => q.Exists(q.Ref(q.Collection('secrets'), '1')),
    paginate: () => q.Paginate(q.Match(q.Index('secrets_all'))),
    'keys()': () => q.Count(q.Keys()),
    call: () => q.Call(q.Function('noop'), 1),
    update: () => q.Update(q.Select('ref', q.Var('doc')), { data: { touched: true } }),
    create: () => q.Create(q.Collection('secrets'), { data: {} }),
    'create key': () => q.CreateKey({ role: 'admin' }),
    'new id': () => q.NewId(),
    identity: () => q.CurrentIdentity(),
    'key from secret': () => q.KeyFromSecret('fnAAAA'),
    'nested in a lambda': () => q.Map([1], q.Lambda('i', q.Get(q.Ref(q.Collection('secrets'), '1')))),
  }

  for (const role of ['admin', 'server']) {
    it(`${role}: every impure binding is refused, on create and on update`, async () => {
      const c = keys[role].client
      for (const [name, make] of Object.entries(IMPURE)) {
        await invalidBinding(
          c.query(
            q.CreateIndex({
              name: `impure_${role}_${name.replace(/\W/g, '_')}`,
              source: { collection: q.Collection('items'), fields: { b: binding(make()) } },
              values: [{ binding: 'b' }],
            })
          )
        ).catch(e => {
          throw new Error(`${role}, binding with ${name}: ${e.message}`)
        })
      }
      // A pure index cannot be turned impure later.
      const idx = `pure_${role}`
      await c.query(
        q.CreateIndex({
          name: idx,
          source: { collection: q.Collection('items'), fields: { up: binding(q.UpperCase(q.Select(['data', 'name'], q.Var('doc'), ''))) } },
          terms: [{ binding: 'up' }],
        })
      )
      await invalidBinding(
        c.query(
          q.Update(q.Index(idx), {
            source: { collection: q.Collection('items'), fields: { up: binding(IMPURE.get()) } },
          })
        )
      )
      await invalidBinding(
        c.query(
          q.Replace(q.Index(idx), {
            name: idx,
            source: { collection: q.Collection('items'), fields: { up: binding(IMPURE.exists()) } },
            terms: [{ binding: 'up' }],
          })
        )
      )
    })
  }

  it('a pure binding gives every writer the same entry, whatever its role', async () => {
    await admin.query(
      q.CreateIndex({
        name: 'by_upper',
        source: {
          collection: q.Collection('items'),
          fields: { up: binding(q.UpperCase(q.Select(['data', 'name'], q.Var('doc'), ''))) },
        },
        terms: [{ binding: 'up' }],
        values: [{ field: ['data', 'by'] }],
      })
    )
    for (const role of ['admin', 'server', 'client', 'custom']) {
      await keys[role].client.query(q.Create(q.Collection('items'), { data: { name: `same`, by: role } }))
    }
    const page = await admin.query(q.Paginate(q.Match(q.Index('by_upper'), 'SAME')))
    assert.deepEqual([...page.data].sort(), ['admin', 'client', 'custom', 'server'])
  })

  it('a binding that reads at run time never uses the writer’s rights and never blocks a write', async () => {
    // IsNonEmpty is pure in v4's table, but over an index it reads: at run time the
    // binding is refused that read, so it yields nothing — for an admin's write as for
    // a client's, whose write (public create) must not fail because of it.
    await admin.query(
      q.CreateIndex({
        name: 'leaky',
        source: {
          collection: q.Collection('items'),
          fields: { leak: binding(q.IsNonEmpty(q.Match(q.Index('secrets_all')))) },
        },
        terms: [{ field: ['data', 'probe'] }],
        values: [{ binding: 'leak' }, { field: ['data', 'probe'] }],
      })
    )
    await admin.query(q.Create(q.Collection('items'), { data: { probe: 'by-admin' } }))
    await keys.client.client.query(q.Create(q.Collection('items'), { data: { probe: 'by-client' } }))
    const seen = {}
    for (const who of ['by-admin', 'by-client']) {
      seen[who] = (await admin.query(q.Paginate(q.Match(q.Index('leaky'), who)))).data
    }
    // Before: the admin's entry said whether secrets exist (read with the admin's
    // rights), and the client's write failed with 403.
    assert.deepEqual(seen, { 'by-admin': [[null, 'by-admin']], 'by-client': [[null, 'by-client']] })
  })
})

// ---------------------------------------------------------------------------
// 7 and 8. Authority does not cross into a child database
// ---------------------------------------------------------------------------

describe('a parent’s keys do not act in a child database', { timeout: 300_000 }, () => {
  let server
  let root
  let child // admin of the child
  let parentServer
  let parentClient
  const user = q.Ref(q.Collection('users', q.Database('kid')), '10')

  before(async () => {
    server = await startServer()
    root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'kid' }))
    const ck = await root.query(q.CreateKey({ database: q.Database('kid'), role: 'admin' }))
    child = server.client(ck.secret)
    await child.query(q.CreateCollection({ name: 'things' }))
    await child.query(q.CreateCollection({ name: 'users' }))
    await child.query(
      q.Create(q.Ref(q.Collection('users'), '10'), { data: { name: 'carol' }, credentials: { password: 'hunter2' } })
    )
    await child.query(
      q.CreateFunction({
        name: 'no_role',
        body: q.Query(q.Lambda('x', q.Create(q.Collection('things'), { data: { x: q.Var('x') } }))),
      })
    )
    await child.query(
      q.CreateFunction({
        name: 'as_admin',
        role: 'admin',
        body: q.Query(q.Lambda('x', q.Paginate(q.Keys()))),
      })
    )
    parentServer = server.client((await root.query(q.CreateKey({ role: 'server' }))).secret)
    parentClient = server.client((await root.query(q.CreateKey({ role: 'client' }))).secret)
  })

  after(async () => {
    if (server) await server.stop()
  })

  it('7: a parent’s server key cannot call a child’s functions', async () => {
    await denied(parentServer.query(q.Call(q.Function('no_role', q.Database('kid')), 'planted')))
    await denied(parentServer.query(q.Call(q.Function('as_admin', q.Database('kid')), 0)))
    const things = await child.query(q.Paginate(q.Documents(q.Collection('things'))))
    assert.deepEqual(things.data, [], 'nothing was written into the child')
    // It still reads the child, as v4's server role does.
    const name = await parentServer.query(q.Select(['data', 'name'], q.Get(user)))
    assert.equal(name, 'carol')
    // The root admin acts in its descendants (it could make a key there anyway).
    await root.query(q.Call(q.Function('no_role', q.Database('kid')), 'by-root-admin'))
    const after = await child.query(q.Paginate(q.Documents(q.Collection('things'))))
    assert.equal(after.data.length, 1)
  })

  it('8: a parent’s client key can neither Identify nor Login against a child’s documents', async () => {
    assert.equal(await parentClient.query(q.Identify(user, 'hunter2')), false, 'no password oracle')
    assert.equal(await parentClient.query(q.Identify(user, 'wrong')), false)
    await expectFaunaError(parentClient.query(q.Login(user, { password: 'hunter2' })), 'BadRequest', 'authentication failed')
    // Not from the parent's admin either: a token would be written into the child.
    await expectFaunaError(root.query(q.Login(user, { password: 'hunter2' })), 'BadRequest', 'authentication failed')
    const tokens = await child.query(q.Paginate(q.Tokens()))
    assert.deepEqual(tokens.data, [], 'no token was written into the child')
    // The child's own keys still log its users in.
    const childClient = server.client((await child.query(q.CreateKey({ role: 'server' }))).secret)
    const own = q.Ref(q.Collection('users'), '10')
    assert.equal(await childClient.query(q.Identify(own, 'hunter2')), true)
    const tok = await childClient.query(q.Login(own, { password: 'hunter2' }))
    assert.equal(typeof tok.secret, 'string')
    const me = await server.client(tok.secret).query(q.CurrentIdentity())
    assert.equal(me.id, '10')
  })
})

// ---------------------------------------------------------------------------
// 9. jwks_uri and server-side request forgery
// ---------------------------------------------------------------------------

function b64url(buf) {
  return Buffer.from(buf).toString('base64url')
}

function rs256(privateKey, claims) {
  const head = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid: 'k' }))
  const body = b64url(JSON.stringify(claims))
  const sig = crypto.sign('RSA-SHA256', Buffer.from(`${head}.${body}`), privateKey)
  return `${head}.${body}.${b64url(sig)}`
}

/** A loopback TCP listener that counts connections (and answers nothing useful). */
async function trap() {
  let connections = 0
  const srv = net.createServer(sock => {
    connections++
    sock.end('HTTP/1.1 500 X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
  })
  await new Promise(r => srv.listen(0, HOST, r))
  return { port: srv.address().port, count: () => connections, close: () => new Promise(r => srv.close(r)) }
}

describe('jwks_uri cannot reach private addresses (SSRF)', { timeout: 120_000 }, () => {
  let server
  let target

  before(async () => {
    server = await startServer() // no --jwks-allow-private
    target = await trap()
  })

  after(async () => {
    if (server) await server.stop()
    if (target) await target.close()
  })

  it('an unauthenticated JWT naming a loopback jwks_uri makes no request', async () => {
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'tenant' }))
    const ak = await root.query(q.CreateKey({ database: q.Database('tenant'), role: 'admin' }))
    const tenant = server.client(ak.secret)
    await tenant.query(q.CreateRole({ name: 'r', privileges: [] }))
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    const uris = [
      `http://${HOST}:${target.port}/internal/admin`,
      `https://${HOST}:${target.port}/internal/admin`,
      `https://localhost:${target.port}/internal/admin`,
    ]
    for (const [i, uri] of uris.entries()) {
      const issuer = `https://issuer-${i}.test/`
      const p = await tenant.query(
        q.CreateAccessProvider({ name: `idp${i}`, issuer, jwks_uri: uri, roles: [q.Role('r')] })
      )
      const now = Math.floor(Date.now() / 1000)
      const jwt = rs256(privateKey, { iss: issuer, aud: p.audience, sub: 'x', iat: now, exp: now + 300 })
      await expectFaunaError(server.client(jwt).query(q.Now()), 'Unauthorized', 'unauthorized')
    }
    assert.equal(target.count(), 0, 'the server connected to a loopback address on a tenant’s behalf')
  })

  it('jwks_uri must be https when the provider is written (v4: invalid uri)', async () => {
    const root = server.adminClient()
    await root.query(q.CreateRole({ name: 'rr', privileges: [] }))
    for (const uri of ['http://idp.example.com/jwks', 'ftp://idp.example.com/jwks', 'idp.example.com']) {
      const e = await expectFaunaError(
        root.query(q.CreateAccessProvider({ name: 'bad', issuer: 'https://bad/', jwks_uri: uri, roles: [q.Role('rr')] })),
        'BadRequest',
        'validation failed'
      )
      const f = e.requestResult.responseContent.errors[0].failures[0]
      assert.deepEqual([f.field, f.code], [['jwks_uri'], 'invalid uri'], uri)
    }
    await root.query(
      q.CreateAccessProvider({ name: 'good', issuer: 'https://good/', jwks_uri: 'https://idp.example.com/jwks', roles: [q.Role('rr')] })
    )
    await expectFaunaError(
      root.query(q.Update(q.AccessProvider('good'), { jwks_uri: 'http://idp.example.com/jwks' })),
      'BadRequest',
      'validation failed'
    )
  })
})

// ---------------------------------------------------------------------------
// 10. The ledger endpoint, CORS, Basic auth
// ---------------------------------------------------------------------------

describe('ledger head, CORS and Basic auth', { timeout: 120_000 }, () => {
  let server
  let root

  before(async () => {
    server = await startServer()
    root = server.adminClient()
    await root.query(q.CreateCollection({ name: 'rootonly' }))
    await root.query(q.CreateDatabase({ name: 'kid' }))
  })

  after(async () => {
    if (server) await server.stop()
  })

  const head = (headers = {}) => rawRequest(server.port, { method: 'GET', path: '/ledger/head', headers })

  it('GET /ledger/head needs the root key or a root admin key, and answers no origin', async () => {
    const origin = { origin: 'https://evil.example' }
    const anon = await head(origin)
    assert.equal(anon.status, 401, anon.body)
    assert.equal(anon.headers['access-control-allow-origin'], undefined)
    const pre = await rawRequest(server.port, {
      method: 'OPTIONS',
      path: '/ledger/head',
      headers: { ...origin, 'access-control-request-method': 'GET' },
    })
    assert.equal(pre.headers['access-control-allow-origin'], undefined, 'no CORS preflight for the ledger')
    const bearer = s => ({ ...origin, authorization: `Bearer ${s}` })
    const serverKey = (await root.query(q.CreateKey({ role: 'server' }))).secret
    const kidAdmin = (await root.query(q.CreateKey({ database: q.Database('kid'), role: 'admin' }))).secret
    for (const s of [serverKey, kidAdmin, `${server.rootKey}:kid:admin`, 'not-a-secret']) {
      const r = await head(bearer(s))
      assert.ok(r.status === 401 || r.status === 403, `${r.status} ${r.body}`)
    }
    const ok = await head(bearer(server.rootKey))
    assert.equal(ok.status, 200)
    assert.equal(typeof JSON.parse(ok.body).hash, 'string')
    assert.equal(ok.headers['access-control-allow-origin'], undefined)
    const rootAdmin = (await root.query(q.CreateKey({ role: 'admin' }))).secret
    assert.equal((await head(bearer(rootAdmin))).status, 200)
  })

  it('the FQL endpoints keep CORS for the browser driver', async () => {
    const pre = await rawRequest(server.port, {
      method: 'OPTIONS',
      path: '/',
      headers: {
        origin: 'https://app.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization,content-type',
      },
    })
    assert.equal(pre.headers['access-control-allow-origin'], '*')
    const r = await server.raw(JSON.stringify({ now: null }), { headers: { origin: 'https://app.example' } })
    assert.equal(r.status, 200)
    assert.equal(r.headers['access-control-allow-origin'], '*')
    // Queries skip the router (http.rs, App) but not its CORS layer: the same headers
    // as /ping, which the router answers, on both query endpoints.
    const ping = await rawRequest(server.port, { method: 'GET', path: '/ping', headers: { origin: 'https://app.example' } })
    const cors = h => ['access-control-allow-origin', 'access-control-expose-headers', 'vary'].map(k => h[k])
    assert.deepEqual(cors(ping.headers), ['*', '*', 'origin, access-control-request-method, access-control-request-headers'])
    assert.deepEqual(cors(r.headers), cors(ping.headers))
    const lin = await rawRequest(server.port, {
      method: 'POST',
      path: '/linearized',
      headers: { origin: 'https://app.example', authorization: `Bearer ${server.rootKey}` },
      body: JSON.stringify({ now: null }),
    })
    assert.equal(lin.status, 200, lin.body)
    assert.deepEqual(cors(lin.headers), cors(ping.headers))
  })

  const basic = user => `Basic ${Buffer.from(user).toString('base64')}`
  const collectionsAs = auth =>
    server.raw(JSON.stringify({ paginate: { collections: null } }), { secret: null, headers: { authorization: auth } })

  it('Basic auth keeps a scoped secret whole', async () => {
    // As the drivers send it: the secret as user name, an empty password.
    const scoped = await collectionsAs(basic(`${server.rootKey}:kid:client:`))
    assert.equal(scoped.status, 403, `a client of kid may not list collections: ${scoped.body}`)
    const kidAdmin = await collectionsAs(basic(`${server.rootKey}:kid:admin:`))
    assert.equal(kidAdmin.status, 200, kidAdmin.body)
    assert.deepEqual(JSON.parse(kidAdmin.body).resource.data, [], 'kid has no collections; the root’s are not shown')
    const whole = await collectionsAs(basic(`${server.rootKey}:`))
    assert.equal(whole.status, 200)
    assert.match(whole.body, /rootonly/)
    // Anything after the last ':' is a password, which no secret has: refused, never
    // read as a shorter (broader) secret.
    const cut = await collectionsAs(basic(`${server.rootKey}:kid:client`))
    assert.equal(cut.status, 401, cut.body)
  })
})

describe('POST /admin/faults needs the root key', { timeout: 120_000 }, () => {
  let cluster

  before(async () => {
    cluster = await new TallyCluster({ replicas: 1 }).start()
  })

  after(async () => {
    if (cluster) await cluster.stop()
  })

  it('anonymous and wrong secrets are refused; the root key isolates', async () => {
    const m = cluster.members[0]
    for (const headers of [{}, { authorization: 'Bearer nope' }]) {
      const r = await rawRequest(m.port, {
        method: 'POST',
        path: '/admin/faults',
        body: JSON.stringify({ isolate: true }),
        headers: { 'content-type': 'application/json', ...headers },
      })
      assert.equal(r.status, 401, r.body)
    }
    assert.equal((await m.status()).body.isolated, false, 'the refused requests isolated nothing')
    const ok = await m.isolate(true)
    assert.equal(ok.status, 200)
    assert.equal(ok.body.isolated, true)
    await m.isolate(false)
  })
})
