'use strict'
// TLS on the client port (`tally serve --tls-cert/--tls-key`): the official driver over
// https (HTTP/2 by ALPN; queries and a document stream) trusting a test CA made by `tally cluster init-certs`, HTTP/1.1
// on the same port, clear errors for a client with the wrong scheme, the warning for
// plain HTTP beyond loopback, and certificate reload (file change and SIGHUP) with open
// connections left alone.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFile, execFileSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const http2 = require('node:http2')
const os = require('node:os')
const path = require('node:path')
const tls = require('node:tls')

const { HOST, startServer, rawRequest, sleep, tallyBin, faunadb } = require('./helpers/server')

const tmp = prefix => fs.mkdtempSync(path.join(os.tmpdir(), prefix))

/** A fresh CA and a server certificate for localhost/127.0.0.1. */
function initCerts() {
  const dir = tmp('tally-certs-')
  execFileSync(tallyBin(), ['cluster', 'init-certs', '--out', dir], { stdio: 'ignore' })
  return { dir, ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') }
}

const fingerprint = file => new crypto.X509Certificate(fs.readFileSync(file)).fingerprint256

/** The official driver in a child process that trusts `ca` (or nothing extra). */
function runDriver(port, secret, collection, ca) {
  const env = { ...process.env }
  delete env.NODE_EXTRA_CA_CERTS
  if (ca) env.NODE_EXTRA_CA_CERTS = ca
  const script = path.join(__dirname, 'helpers', 'tls_driver.js')
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [script, String(port), secret, collection], { env, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`driver process failed: ${err.message}\n${stderr}`))
      resolve(JSON.parse(stdout.trim().split('\n').pop()))
    })
  })
}

/** Handshake only: the certificate the server presents and the protocol ALPN chose. */
function handshake(port, { ca, alpn = ['h2', 'http/1.1'] } = {}) {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: HOST, port, ca, ALPNProtocols: alpn, servername: 'localhost' }, () => {
      const r = { fingerprint: sock.getPeerCertificate().fingerprint256, alpn: sock.alpnProtocol }
      sock.end()
      resolve(r)
    })
    sock.setTimeout(5000, () => sock.destroy(new Error('handshake timed out')))
    sock.on('error', reject)
  })
}

/** GET /ping on an open HTTP/2 session; resolves the status. */
function h2Ping(session) {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': '/ping', ':method': 'GET' })
    req.on('response', h => {
      req.resume()
      req.on('end', () => resolve(h[':status']))
    })
    req.on('error', reject)
    req.end()
  })
}

/** Replace `dst` with `src` the way deployment tools do: write beside, then rename. */
function replaceFile(src, dst) {
  fs.copyFileSync(src, dst + '.new')
  fs.renameSync(dst + '.new', dst)
}

async function waitFor(what, fn, ms = 10_000) {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

test('the npm driver speaks https (HTTP/2 by ALPN) to a server whose CA it trusts; HTTP/1.1 on the same port', { timeout: 120_000 }, async t => {
  const certs = initCerts()
  const server = await startServer({ tls: certs })
  t.after(async () => {
    await server.stop()
    fs.rmSync(certs.dir, { recursive: true, force: true })
  })
  assert.match(server.output, /listening on .* \(https\)/)
  assert.match(server.output, new RegExp(`web console: https://127\\.0\\.0\\.1:${server.port}/console/`))

  const r = await runDriver(server.port, server.rootKey, 'tls_notes', certs.ca)
  assert.equal(r.ok, true, JSON.stringify(r))
  assert.equal(r.n, 42)
  assert.deepEqual(r.ids, [r.id])
  // Streams ride the same HTTP/2 connection over TLS.
  assert.deepEqual(r.streamed, [43, 44])

  const ca = fs.readFileSync(certs.ca)
  assert.equal((await handshake(server.port, { ca })).alpn, 'h2')
  assert.equal((await handshake(server.port, { ca, alpn: ['http/1.1'] })).alpn, 'http/1.1')
  const h1 = await rawRequest(server.port, { method: 'GET', path: '/ping', ca })
  assert.equal(h1.status, 200)

  // Verification is real: without the test CA the driver refuses the certificate.
  const untrusted = await runDriver(server.port, server.rootKey, 'tls_other', null)
  assert.equal(untrusted.ok, false)
  assert.match(untrusted.message + ' ' + untrusted.code, /certificate|self.signed|UNABLE_TO/i)
})

test('a plain-HTTP client on the TLS port is told to use https; a TLS client on a plain port is logged', { timeout: 60_000 }, async t => {
  const certs = initCerts()
  const tlsServer = await startServer({ tls: certs })
  const plain = await startServer()
  t.after(async () => {
    await tlsServer.stop()
    await plain.stop()
    fs.rmSync(certs.dir, { recursive: true, force: true })
  })
  const r = await rawRequest(tlsServer.port, { method: 'POST', path: '/', body: '{"add":[1,2]}', headers: { authorization: `Bearer ${tlsServer.rootKey}` } })
  assert.equal(r.status, 400)
  const err = JSON.parse(r.body).errors[0]
  assert.equal(err.code, 'bad request')
  assert.match(err.description, /https/)

  // The npm driver speaks cleartext HTTP/2 (h2c) to an http:// endpoint: it gets the same
  // answer as a driver error, not a bare protocol error.
  const driver = new faunadb.Client({ secret: tlsServer.rootKey, domain: HOST, port: tlsServer.port, scheme: 'http', timeout: 10, checkNewVersion: false })
  try {
    await assert.rejects(driver.query(faunadb.query.Add(1, 2)), e => {
      assert.equal(e.name, 'BadRequest', `${e.name}: ${e.message}`)
      assert.equal(e.requestResult.statusCode, 400)
      assert.match(e.requestResult.responseContent.errors[0].description, /connect with https:\/\//)
      return true
    })
  } finally {
    await Promise.resolve(driver.close({ force: true })).catch(() => {})
  }

  await assert.rejects(handshake(plain.port, { ca: fs.readFileSync(certs.ca) }))
  await waitFor('the plain server to log the TLS attempt', () => plain.output.includes('tried TLS (https) on this plain-HTTP port'))
  // Plain HTTP on loopback is the development default: no warning.
  assert.doesNotMatch(plain.output, /serving plain HTTP/)
})

test('plain HTTP beyond loopback warns at start', { timeout: 60_000 }, async t => {
  const server = await startServer({ listenHost: '0.0.0.0' })
  t.after(() => server.stop())
  assert.match(server.output, /warning: serving plain HTTP on 0\.0\.0\.0:\d+, beyond loopback/)
})

/** A server on copies of set A's files, both CAs trusted by the checks. */
async function reloadSetup(t, extraArgs = []) {
  const a = initCerts()
  const b = initCerts()
  const live = tmp('tally-live-certs-')
  fs.copyFileSync(a.cert, path.join(live, 'server.pem'))
  fs.copyFileSync(a.key, path.join(live, 'server.key'))
  const files = { cert: path.join(live, 'server.pem'), key: path.join(live, 'server.key'), ca: a.ca }
  const server = await startServer({ tls: files, extraArgs })
  const ca = [fs.readFileSync(a.ca), fs.readFileSync(b.ca)]
  const session = http2.connect(`https://${HOST}:${server.port}`, { ca, servername: 'localhost' })
  t.after(async () => {
    session.close()
    await server.stop()
    for (const d of [a.dir, b.dir, live]) fs.rmSync(d, { recursive: true, force: true })
  })
  assert.equal((await handshake(server.port, { ca })).fingerprint, fingerprint(a.cert))
  assert.equal(await h2Ping(session), 200)
  const replace = () => {
    replaceFile(b.key, files.key)
    replaceFile(b.cert, files.cert)
  }
  return { server, a, b, ca, session, replace }
}

test('replaced certificate files are served to new connections without a restart; open ones keep working', { timeout: 60_000 }, async t => {
  const { server, b, ca, session, replace } = await reloadSetup(t)
  replace()
  const seen = await waitFor('the new certificate', async () => {
    const fp = (await handshake(server.port, { ca })).fingerprint
    return fp === fingerprint(b.cert) && fp
  })
  assert.equal(seen, fingerprint(b.cert))
  // The session opened before the reload is unaffected.
  assert.equal(await h2Ping(session), 200)
  // A driver trusting only the new CA now works.
  const r = await runDriver(server.port, server.rootKey, 'after_reload', b.ca)
  assert.equal(r.ok, true, JSON.stringify(r))
  assert.match(server.output, /TLS certificate reloaded/)
})

test('SIGHUP reloads the certificate', { timeout: 60_000 }, async t => {
  // File watching off: only the signal can make the server pick up the new files.
  const { server, a, b, ca, replace } = await reloadSetup(t, ['--tls-reload-poll-ms', '0'])
  replace()
  await sleep(1500)
  assert.equal((await handshake(server.port, { ca })).fingerprint, fingerprint(a.cert), 'reloaded without SIGHUP')
  server.proc.kill('SIGHUP')
  await waitFor('the certificate after SIGHUP', async () => (await handshake(server.port, { ca })).fingerprint === fingerprint(b.cert))
  assert.match(server.output, /TLS certificate reloaded.*SIGHUP|SIGHUP.*TLS certificate reloaded/)
})

test('the operator tools reach an https server by name: shell, export, backup (trusting --ca; refusing without it)', { timeout: 120_000 }, async t => {
  const certs = initCerts()
  const server = await startServer({ tls: certs })
  const out = tmp('tally-tls-tools-')
  t.after(async () => {
    await server.stop()
    fs.rmSync(certs.dir, { recursive: true, force: true })
    fs.rmSync(out, { recursive: true, force: true })
  })
  const env = { ...process.env, TALLY_SECRET: server.rootKey, TALLY_ROOT_KEY: server.rootKey }
  const run = args =>
    new Promise(resolve => {
      execFile(tallyBin(), args, { env, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? err.code : 0, stdout, stderr })
      )
    })
  // By host name: the certificate of init-certs names localhost.
  const endpoint = `https://localhost:${server.port}`
  const shell = await run(['shell', '--endpoint', endpoint, '--ca', certs.ca, '--eval',
    'CreateCollection({name: "tools"}); Create(Collection("tools"), {data: {n: 7}}); Count(Documents(Collection("tools")))'])
  assert.equal(shell.code, 0, shell.stderr)
  assert.match(shell.stdout.trim().split('\n').pop(), /^1$/)

  const exported = path.join(out, 'export.jsonl')
  const ex = await run(['export', '--endpoint', endpoint, '--ca', certs.ca, '--out', exported])
  assert.equal(ex.code, 0, ex.stderr)
  assert.match(fs.readFileSync(exported, 'utf8'), /"n":7/)

  const backup = path.join(out, 'node.backup')
  const bk = await run(['backup', '--endpoint', endpoint, '--ca', certs.ca, '--out', backup])
  assert.equal(bk.code, 0, bk.stderr)
  assert.ok(fs.statSync(backup).size > 0)

  // Verification is real: without --ca the public roots do not vouch for the test CA.
  const untrusted = await run(['shell', '--endpoint', endpoint, '--eval', 'Add(1, 2)'])
  assert.notEqual(untrusted.code, 0)
  assert.match(untrusted.stderr, /TLS handshake with localhost:\d+[\s\S]*(certificate|UnknownIssuer)/i)
  // Plain http to the TLS port is told what to use.
  const plain = await run(['shell', '--endpoint', `http://localhost:${server.port}`, '--eval', 'Add(1, 2)'])
  assert.notEqual(plain.code, 0)
})
