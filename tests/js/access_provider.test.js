'use strict'
// JWT logins through access providers (FQL v4), end to end with the official driver: a
// tiny JWKS server on loopback publishes an RSA key made here, an access provider in a
// tenant database points at it, and tokens signed with node's crypto are used as
// secrets. A valid token gets the provider's roles (one plain, one chosen by a predicate
// on the claims); expired, badly signed, unknown-issuer, wrong-audience, wrong-kid and
// `alg: none` tokens are `unauthorized`. The same on a 3-member cluster, through a
// follower, where the claims travel in the forwarded input.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const http = require('node:http')
const { startServer, expectFaunaError, faunadb, q, HOST } = require('./helpers/server')
const { TallyCluster } = require('./helpers/cluster')

const ISSUER = 'https://idp.tally.test/'
const ISSUER2 = 'https://admins.tally.test/'

const denied = p => expectFaunaError(p, 'PermissionDenied', 'permission denied')
const unauthorized = p => expectFaunaError(p, 'Unauthorized', 'unauthorized')

const b64url = v => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')

/** An RSA signing key and its public JWK. */
function rsaKey(kid) {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
  return { kid, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' } }
}

/** A compact JWS signed with `key` (RS256 unless `header.alg` says otherwise). */
function sign(key, claims, header = {}) {
  const h = { alg: 'RS256', typ: 'JWT', kid: key.kid, ...header }
  const hash = { RS256: 'sha256', RS384: 'sha384', RS512: 'sha512' }[h.alg] || 'sha256'
  const signed = `${b64url(h)}.${b64url(claims)}`
  return `${signed}.${crypto.sign(hash, Buffer.from(signed), key.privateKey).toString('base64url')}`
}

/** Serves `{keys}` at /.well-known/jwks.json on loopback and counts the fetches. */
async function startJwks(keys) {
  const jwks = { keys, hits: 0 }
  jwks.server = http.createServer((req, res) => {
    jwks.hits++
    if (req.url !== '/.well-known/jwks.json') {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: jwks.keys }))
  })
  await new Promise(resolve => jwks.server.listen(0, HOST, resolve))
  jwks.uri = `http://${HOST}:${jwks.server.address().port}/.well-known/jwks.json`
  jwks.close = () => new Promise(resolve => jwks.server.close(resolve))
  return jwks
}

const now = () => Math.floor(Date.now() / 1000)

/**
 * In the database `admin` opens: `notes` (one document) and `secrets` (one document);
 * role `reader` reads notes, role `writer` reads and creates them. Provider `idp` grants
 * `reader` to every token and `writer` to tokens whose `groups` claim holds "writers";
 * provider `admins` grants `writer` only by predicate (`admin: true`).
 */
async function setupTenant(admin, jwksUri) {
  await admin.query(q.CreateCollection({ name: 'notes' }))
  await admin.query(q.CreateCollection({ name: 'secrets' }))
  await admin.query(q.Create(q.Ref(q.Collection('notes'), '1'), { data: { text: 'hello' } }))
  await admin.query(q.Create(q.Ref(q.Collection('secrets'), '1'), { data: { text: 'hidden' } }))
  await admin.query(q.CreateRole({
    name: 'reader',
    privileges: [{ resource: q.Collection('notes'), actions: { read: true } }],
  }))
  await admin.query(q.CreateRole({
    name: 'writer',
    privileges: [{ resource: q.Collection('notes'), actions: { read: true, create: true } }],
  }))
  const provider = await admin.query(q.CreateAccessProvider({
    name: 'idp',
    issuer: ISSUER,
    jwks_uri: jwksUri,
    roles: [
      q.Role('reader'),
      {
        role: q.Role('writer'),
        predicate: q.Query(q.Lambda('claims',
          q.ContainsValue('writers', q.Select(['groups'], q.Var('claims'), [])))),
      },
    ],
  }))
  await admin.query(q.CreateAccessProvider({
    name: 'admins',
    issuer: ISSUER2,
    jwks_uri: jwksUri,
    roles: [{
      role: q.Role('writer'),
      predicate: q.Query(q.Lambda('claims', q.Equals(true, q.Select(['admin'], q.Var('claims'), false)))),
    }],
  }))
  return provider
}

describe('access providers: JWT logins on one node', { timeout: 300_000 }, () => {
  let server
  let jwks
  let admin
  let audience
  const key = rsaKey('k1')
  const stranger = rsaKey('k1') // same kid, another key: forged signatures
  const tokens = []
  const jwt = (claims, header, signer = key) => {
    const t = sign(signer, { iss: ISSUER, aud: audience, iat: now(), exp: now() + 300, ...claims }, header)
    tokens.push(t)
    return t
  }
  const as = token => server.client(token)

  before(async () => {
    jwks = await startJwks([key.jwk])
    // The test identity provider serves its keys over http on loopback, which only an
    // operator's --jwks-allow-private lets the server fetch.
    server = await startServer({ extraArgs: ['--jwks-allow-private'] })
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'app' }))
    const k = await root.query(q.CreateKey({ database: q.Database('app'), role: 'admin' }))
    admin = server.client(k.secret)
    const provider = await setupTenant(admin, jwks.uri)
    audience = provider.audience
  })

  after(async () => {
    if (server) await server.stop()
    if (jwks) await jwks.close()
  })

  it('the provider shows the audience tokens must carry', async () => {
    assert.match(audience, /^https:\/\/db\.fauna\.com\/db\/[ybndrfg8ejkmcpqxot1uwisza345h769]{13}$/)
    const again = await admin.query(q.Get(q.AccessProvider('idp')))
    assert.equal(again.audience, audience)
    assert.equal(again.issuer, ISSUER)
    // Another database's providers have another audience.
    const root = server.adminClient()
    await root.query(q.CreateAccessProvider({ name: 'rootidp', issuer: 'https://root.tally.test/', jwks_uri: jwks.uri }))
    const other = await root.query(q.Get(q.AccessProvider('rootidp')))
    assert.notEqual(other.audience, audience)
  })

  it('a valid token reads what its role allows and nothing else', async () => {
    const c = as(jwt({ sub: 'user-1' }))
    const note = await c.query(q.Get(q.Ref(q.Collection('notes'), '1')))
    assert.equal(note.data.text, 'hello')
    const page = await c.query(q.Paginate(q.Documents(q.Collection('notes'))))
    assert.equal(page.data.length, 1)
    await denied(c.query(q.Get(q.Ref(q.Collection('secrets'), '1'))))
    await denied(c.query(q.Create(q.Collection('notes'), { data: { text: 'nope' } })))
    await denied(c.query(q.Paginate(q.Collections())))
    await denied(c.query(q.CreateCollection({ name: 'mine' })))
  })

  it('CurrentIdentity() is the sub claim; CurrentToken() the claims; Logout() does nothing', async () => {
    const c = as(jwt({ sub: 'user-1', email: 'u1@example.com' }))
    assert.equal(await c.query(q.CurrentIdentity()), 'user-1')
    assert.equal(await c.query(q.HasCurrentIdentity()), true)
    assert.equal(await c.query(q.HasCurrentToken()), true)
    const claims = await c.query(q.CurrentToken())
    assert.equal(claims.sub, 'user-1')
    assert.equal(claims.email, 'u1@example.com')
    assert.equal(claims.iss, ISSUER)
    assert.equal(await c.query(q.Logout(false)), false)
    assert.equal(await c.query(q.Logout(true)), false)
    const anonymous = as(jwt({ sub: undefined }))
    assert.equal(await anonymous.query(q.HasCurrentIdentity()), false)
    await expectFaunaError(anonymous.query(q.CurrentIdentity()), 'BadRequest', 'missing identity')
  })

  it('a predicate on the claims selects the writer role; the write runs from the logged claims', async () => {
    const c = as(jwt({ sub: 'writer-1', groups: ['staff', 'writers'] }))
    const doc = await c.query(q.Create(q.Collection('notes'), { data: { by: q.CurrentIdentity(), text: 'mine' } }))
    assert.equal(doc.data.by, 'writer-1')
    const back = await admin.query(q.Get(doc.ref))
    assert.equal(back.data.by, 'writer-1')
    await denied(as(jwt({ sub: 'reader-2', groups: ['staff'] })).query(q.Create(q.Collection('notes'), {})))
    await denied(c.query(q.Create(q.Collection('secrets'), {})))
  })

  it('a provider whose only role is chosen by a predicate refuses tokens it does not admit', async () => {
    const claims = { iss: ISSUER2, aud: audience, sub: 'boss', exp: now() + 300 }
    const boss = sign(key, { ...claims, admin: true })
    const nobody = sign(key, claims)
    tokens.push(boss, nobody)
    const doc = await as(boss).query(q.Create(q.Collection('notes'), { data: { by: q.CurrentIdentity() } }))
    assert.equal(doc.data.by, 'boss')
    await unauthorized(as(nobody).query(q.Get(q.Ref(q.Collection('notes'), '1'))))
  })

  it('expired, not yet valid, badly signed, unknown issuer, wrong audience, wrong kid and unsigned tokens are unauthorized', async () => {
    const read = t => as(t).query(q.Get(q.Ref(q.Collection('notes'), '1')))
    await unauthorized(read(jwt({ sub: 'u', exp: now() - 5 })))
    await unauthorized(read(jwt({ sub: 'u', nbf: now() + 600 })))
    await unauthorized(read(jwt({ sub: 'u' }, {}, stranger)))
    await unauthorized(read(jwt({ sub: 'u', iss: 'https://unknown.tally.test/' })))
    await unauthorized(read(jwt({ sub: 'u', aud: 'https://db.fauna.com/db/yyyyyyyyyyyyy' })))
    await unauthorized(read(jwt({ sub: 'u', aud: 'https://example.com/' })))
    await unauthorized(read(jwt({ sub: 'u' }, { kid: 'unknown-kid' })))
    // Claims changed after signing.
    const [h, , s] = jwt({ sub: 'u' }).split('.')
    const tampered = `${h}.${b64url({ iss: ISSUER, aud: audience, sub: 'admin', exp: now() + 300, groups: ['writers'] })}.${s}`
    await unauthorized(read(tampered))
    const none = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ iss: ISSUER, aud: audience, sub: 'u' })}.`
    await unauthorized(read(none))
    const hs = `${b64url({ alg: 'HS256', kid: 'k1' })}.${b64url({ iss: ISSUER, aud: audience, sub: 'u' })}.` +
      crypto.createHmac('sha256', JSON.stringify(key.jwk)).update('x').digest('base64url')
    await unauthorized(read(hs))
    await unauthorized(read('eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.AAAA'))
    // The refusal names no provider, issuer or key.
    const e = await unauthorized(read(jwt({ sub: 'u' }, {}, stranger)))
    const desc = e.requestResult.responseContent.errors[0].description
    assert.doesNotMatch(desc, /idp|k1|127\.0\.0\.1/)
    const expired = await unauthorized(read(jwt({ sub: 'u', exp: now() - 5 })))
    assert.match(expired.requestResult.responseContent.errors[0].description, /expired/)
  })

  it('keys are fetched once, not per request; the tokens never reach the server log', async () => {
    for (let i = 0; i < 5; i++) await as(jwt({ sub: `u${i}` })).query(q.Exists(q.Ref(q.Collection('notes'), '1')))
    // The first login fetched; unknown-kid tokens may have refetched once (rate-limited).
    assert.ok(jwks.hits >= 1 && jwks.hits <= 3, `JWKS fetched ${jwks.hits} times`)
    const out = server.output
    for (const t of tokens) assert.ok(!out.includes(t.split('.')[2]), 'a token signature appeared in the server output')
  })

  it('changing the provider takes effect at once; deleting it ends the logins', async () => {
    const reader = jwt({ sub: 'user-9' })
    const writer = jwt({ sub: 'user-10', groups: ['writers'] })
    assert.ok(await as(reader).query(q.Exists(q.Ref(q.Collection('notes'), '1'))))
    await admin.query(q.Update(q.AccessProvider('idp'), {
      roles: [{
        role: q.Role('writer'),
        predicate: q.Query(q.Lambda('claims', q.ContainsValue('writers', q.Select(['groups'], q.Var('claims'), [])))),
      }],
    }))
    await unauthorized(as(reader).query(q.Exists(q.Ref(q.Collection('notes'), '1'))))
    assert.ok(await as(writer).query(q.Exists(q.Ref(q.Collection('notes'), '1'))))
    await admin.query(q.Delete(q.AccessProvider('idp')))
    await unauthorized(as(writer).query(q.Exists(q.Ref(q.Collection('notes'), '1'))))
  })

  it('a provider grants the role it was given, not a new role under its name (issue 12)', async () => {
    const issuer = 'https://visitors.tally.test/'
    await admin.query(q.CreateRole({ name: 'visitor', privileges: [] }))
    const p = await admin.query(
      q.CreateAccessProvider({ name: 'visitors', issuer, jwks_uri: jwks.uri, roles: [q.Role('visitor')] })
    )
    const token = sign(key, { iss: issuer, aud: p.audience, sub: 'v', exp: now() + 300 })
    tokens.push(token)
    await denied(as(token).query(q.Get(q.Ref(q.Collection('notes'), '1'))))
    // Renamed, the role is still granted (and now reads notes).
    await admin.query(
      q.Update(q.Role('visitor'), {
        name: 'guest',
        privileges: [{ resource: q.Collection('notes'), actions: { read: true } }],
      })
    )
    assert.ok(await as(token).query(q.Exists(q.Ref(q.Collection('notes'), '1'))))
    // Deleted, and another role made under the name the provider shows: not granted.
    await admin.query(q.Delete(q.Role('guest')))
    await admin.query(
      q.CreateRole({ name: 'visitor', privileges: [{ resource: q.Collection('secrets'), actions: { read: true } }] })
    )
    await unauthorized(as(token).query(q.Get(q.Ref(q.Collection('secrets'), '1'))))
  })
})

describe('access providers: JWT logins through a cluster follower', { timeout: 300_000 }, () => {
  let cluster
  let jwks
  let audience
  const key = rsaKey('ck1')
  const clients = []
  const connect = (member, secret) => {
    const c = new faunadb.Client({ secret, domain: HOST, port: member.port, scheme: 'http', timeout: 30, checkNewVersion: false })
    clients.push(c)
    return c
  }
  const jwt = claims => sign(key, { iss: ISSUER, aud: audience, exp: now() + 300, ...claims })

  before(async () => {
    jwks = await startJwks([key.jwk])
    cluster = await new TallyCluster({ replicas: 3, extraArgs: ['--jwks-allow-private'] }).start()
    const follower = (await cluster.followers())[0]
    const root = connect(follower, cluster.rootKey)
    await root.query(q.CreateDatabase({ name: 'app' }))
    const k = await root.query(q.CreateKey({ database: q.Database('app'), role: 'admin' }))
    audience = (await setupTenant(connect(follower, k.secret), jwks.uri)).audience
  })

  after(async () => {
    await Promise.all(clients.map(c => Promise.resolve(c.close({ force: true })).catch(() => {})))
    if (cluster) await cluster.stop()
    if (jwks) await jwks.close()
  })

  it('a follower verifies the token, forwards the claims, and every member applies the write', async () => {
    const follower = (await cluster.followers())[0]
    const writer = connect(follower, jwt({ sub: 'cw-1', groups: ['writers'] }))
    const doc = await writer.query(q.Create(q.Collection('notes'), { data: { by: q.CurrentIdentity() } }))
    assert.equal(doc.data.by, 'cw-1')
    await cluster.converge()
    for (const m of cluster.alive()) {
      const reader = connect(m, jwt({ sub: 'cr-1' }))
      const back = await reader.query(q.Get(doc.ref))
      assert.equal(back.data.by, 'cw-1', `member ${m.id}`)
      await denied(reader.query(q.Create(q.Collection('notes'), {})))
      await denied(reader.query(q.Get(q.Ref(q.Collection('secrets'), '1'))))
    }
    const leader = await cluster.leader()
    await unauthorized(connect(leader, jwt({ sub: 'x', exp: now() - 1 })).query(q.Exists(doc.ref)))
  })
})
