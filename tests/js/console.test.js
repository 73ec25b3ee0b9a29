'use strict'
// The web console at /console (docs/console.md), in a real browser (headless Chromium)
// against a real server: sign in, the database tree, schema forms, documents with
// paging, a document's history, the query console and the ledger view (block hashes, the
// head's Ed25519 signature and an inclusion proof checked in the page). Its routes are
// checked over plain HTTP too: security headers, no CORS, secrets only from
// Authorization, bounded input, parse errors with line and column.
// Screenshots: tests/js/artifacts/console-*.png.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')

const { startServer, rawRequest, q } = require('./helpers/server')
const { skipUnlessBrowser, launch, screenshot, watchErrors } = require('./helpers/browser')

const json = (port, path, body, headers = {}) =>
  rawRequest(port, { path, body: JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } })

describe('console routes over HTTP', { timeout: 60_000 }, () => {
  let server
  before(async () => {
    server = await startServer()
  })
  after(async () => {
    if (server) await server.stop()
  })

  it('serves the pages with a strict content security policy and no CORS', async () => {
    // A new user learns the address from `tally serve` itself.
    assert.match(server.output, new RegExp(`web console: http://127\\.0\\.0\\.1:${server.port}/console/`))
    const page = await rawRequest(server.port, { method: 'GET', path: '/console/', headers: { origin: 'https://evil.example' } })
    assert.equal(page.status, 200)
    assert.match(page.body, /<title>Tally console<\/title>/)
    assert.match(page.headers['content-security-policy'], /script-src 'self'.*frame-ancestors 'none'/)
    assert.equal(page.headers['x-frame-options'], 'DENY')
    assert.equal(page.headers['access-control-allow-origin'], undefined)
    const redirect = await rawRequest(server.port, { method: 'GET', path: '/console' })
    assert.equal(redirect.status, 308)
    assert.equal(redirect.headers.location, '/console/')
    const missing = await rawRequest(server.port, { method: 'GET', path: '/console/nope.js' })
    assert.equal(missing.status, 404)
    // A page on another origin cannot send the Authorization header here: no preflight passes.
    const preflight = await rawRequest(server.port, {
      method: 'OPTIONS',
      path: '/console/query',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' },
    })
    assert.equal(preflight.headers['access-control-allow-origin'], undefined)
  })

  it('runs FQL text with the caller’s secret and answers in the same syntax', async () => {
    const auth = { authorization: `Bearer ${server.rootKey}` }
    const made = await json(server.port, '/console/query', { fql: 'CreateCollection({name: "pets"})' }, auth)
    assert.equal(made.status, 200)
    assert.ok(made.headers['x-txn-time'])
    const created = await json(server.port, '/console/query', { fql: 'q.Create(Ref(Collection("pets"), "7"), {data: {n: 1}})' }, auth)
    assert.match(JSON.parse(created.body).text, /ref: Ref\(Collection\("pets"\), "7"\)/)
    const counted = JSON.parse((await json(server.port, '/console/query', { fql: 'Count(Documents(Collection("pets"))) // one' }, auth)).body)
    assert.equal(counted.resource, 1)
    assert.equal(counted.text, '1')
    assert.deepEqual(counted.query, { count: { documents: { collection: 'pets' } } })
  })

  it('refuses a missing or wrong secret, and never reads one from the body', async () => {
    const none = await json(server.port, '/console/query', { fql: 'Paginate(Collections())', secret: server.rootKey })
    assert.equal(none.status, 401)
    assert.equal(JSON.parse(none.body).errors[0].code, 'unauthorized')
    const wrong = await json(server.port, '/console/query', { fql: 'Paginate(Collections())' }, { authorization: 'Bearer not-a-secret' })
    assert.equal(wrong.status, 401)
  })

  it('points parse errors at line and column, and bounds its input', async () => {
    const bad = await json(server.port, '/console/parse', { fql: 'Add(1,\n  Var("x"]' })
    assert.equal(bad.status, 400)
    const e = JSON.parse(bad.body).errors[0]
    assert.equal(e.code, 'invalid expression')
    assert.deepEqual([e.line, e.column], [2, 10])
    const ok = JSON.parse((await json(server.port, '/console/parse', { fql: 'Let({a: 1}, Add(Var("a"), 2))' })).body)
    assert.deepEqual(ok.wire, { let: [{ a: 1 }], in: { add: [{ var: 'a' }, 2] } })
    const huge = await json(server.port, '/console/parse', { fql: '"' + 'x'.repeat(1_100_000) + '"' })
    assert.equal(huge.status, 413)
    const many = await json(server.port, '/console/format', { values: Array(1001).fill(1) })
    assert.equal(many.status, 400)
    const notJson = await rawRequest(server.port, { path: '/console/format', body: 'values=1' })
    assert.equal(notJson.status, 400)
  })

  it('/ledger/blocks needs the root’s authority and lists hash-chained headers', async () => {
    const root = server.adminClient()
    await root.query(q.CreateDatabase({ name: 'child' }))
    const none = await rawRequest(server.port, { method: 'GET', path: '/ledger/blocks' })
    assert.equal(none.status, 401)
    const scoped = await rawRequest(server.port, { method: 'GET', path: '/ledger/blocks', headers: { authorization: `Bearer ${server.rootKey}:child:admin` } })
    assert.equal(scoped.status, 403)
    const res = await rawRequest(server.port, { method: 'GET', path: '/ledger/blocks?limit=3', headers: { authorization: `Bearer ${server.rootKey}` } })
    assert.equal(res.status, 200)
    assert.equal(res.headers['access-control-allow-origin'], undefined)
    const { head, blocks } = JSON.parse(res.body)
    assert.equal(blocks.length, 3)
    assert.equal(blocks[0].height, head.height)
    assert.equal(blocks[0].hash, head.hash)
    assert.equal(blocks[0].header.prev_hash, blocks[1].hash)
    const older = JSON.parse((await rawRequest(server.port, { method: 'GET', path: `/ledger/blocks?before=${blocks[1].height}&limit=1`, headers: { authorization: `Bearer ${server.rootKey}` } })).body)
    assert.deepEqual(older.blocks, [blocks[2]])
    const badParam = await rawRequest(server.port, { method: 'GET', path: '/ledger/blocks?limit=x', headers: { authorization: `Bearer ${server.rootKey}` } })
    assert.equal(badParam.status, 400)
  })
})

describe('the console in a browser', { timeout: 180_000, ...skipUnlessBrowser() }, () => {
  let server, browser, context, page, errors

  before(async () => {
    server = await startServer()
    ;({ browser, context } = await launch())
    page = await context.newPage()
    page.on('dialog', d => d.accept()) // the delete confirmations
    errors = watchErrors(page)
  })

  after(async () => {
    if (browser) await browser.close()
    if (server) await server.stop()
  })

  const result = () => page.getByRole('region', { name: 'Result' })
  const runQuery = async text => {
    await page.getByRole('textbox', { name: 'Query' }).fill(text)
    await page.getByRole('button', { name: 'Run', exact: true }).click()
    await result().locator('pre').waitFor()
    return (await result().locator('pre').textContent()).trim()
  }

  it('signs in with a secret kept only in the tab', async () => {
    await page.goto(`${server.url}/console/`)
    await page.getByLabel('Secret').fill('not-a-secret')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('alert').getByText('That secret was refused').waitFor()
    await page.getByLabel('Secret').fill(server.rootKey)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('heading', { name: 'This database', level: 1 }).waitFor()
    const stored = await page.evaluate(() => ({ session: { ...sessionStorage }, local: localStorage.length, cookie: document.cookie }))
    assert.deepEqual(Object.values(stored.session), [server.rootKey])
    assert.equal(stored.local, 0)
    assert.equal(stored.cookie, '')
    await screenshot(page, 'console-1-signed-in')
  })

  it('creates a child database, which the tree shows, and a collection in it', async () => {
    await page.getByLabel('New database name').fill('shop')
    await page.getByRole('button', { name: 'Create database' }).click()
    const tree = page.getByRole('navigation', { name: 'Database tree' })
    await tree.getByRole('link', { name: 'shop' }).click()
    await page.getByRole('heading', { name: 'Database shop', level: 1 }).waitFor()
    await page.getByLabel('New collection name').fill('pets')
    await page.getByRole('button', { name: 'Create collection' }).click()
    await page.getByRole('link', { name: 'pets' }).first().waitFor()
    // Made inside the child database, not at the root.
    const child = await server.adminClient().query(q.Paginate(q.Collections(q.Database('shop'))))
    assert.deepEqual(child.data.map(r => r.id), ['pets'])
    assert.deepEqual((await server.adminClient().query(q.Paginate(q.Collections()))).data, [])
  })

  it('creates an index, a function, a role and a key; the new secret is shown once and works', async () => {
    await page.getByLabel('New index name').fill('pets_by_kind')
    await page.getByLabel('Terms (FQL)').fill('[{field: ["data", "kind"]}]')
    await page.getByRole('button', { name: 'Create index' }).click()
    await page.getByRole('table', { name: 'Indexes' }).getByText('pets_by_kind', { exact: true }).waitFor()
    await page.getByLabel('New function name').fill('double')
    await page.getByLabel('Function body (FQL)').fill('Query(Lambda("x", Multiply(Var("x"), 2)))')
    await page.getByRole('button', { name: 'Create function' }).click()
    await page.getByRole('table', { name: 'Functions' }).getByText('double', { exact: true }).waitFor()
    await page.getByLabel('New role name').fill('reader')
    await page.getByLabel('Privileges (FQL)').fill('[{resource: Collection("pets"), actions: {read: true}}]')
    await page.getByRole('button', { name: 'Create role' }).click()
    await page.getByRole('table', { name: 'Roles' }).getByText('reader', { exact: true }).waitFor()
    await page.getByLabel('Role of the new key').selectOption('server')
    await page.getByLabel('Key name').fill('ci key')
    await page.getByRole('button', { name: 'Create key' }).click()
    const secret = (await page.getByRole('status').getByLabel('New key secret').textContent()).trim()
    assert.ok(secret.length > 20)
    await screenshot(page, 'console-2-schema')
    const keyClient = server.client(secret)
    assert.equal(await keyClient.query(q.Call(q.Function('double'), 21)), 42)
    await page.getByRole('button', { name: 'Done' }).click()
    await page.getByText(secret).waitFor({ state: 'detached' }) // gone from the page
    await page.getByRole('button', { name: 'Delete key ci key' }).click()
    await page.getByRole('button', { name: 'Delete key ci key' }).waitFor({ state: 'detached' })
    await assert.rejects(keyClient.query(q.Paginate(q.Collections())), e => e.requestResult.statusCode === 401)
  })

  it('creates documents, browses them in pages and runs a query', async () => {
    await page.getByRole('link', { name: 'pets' }).first().click()
    await page.getByRole('heading', { name: 'Collection pets' }).waitFor()
    await page.getByLabel('New document data').fill('{name: "Rex", kind: "dog"}')
    await page.getByLabel('Document id').fill('1')
    await page.getByRole('button', { name: 'Create document' }).click()
    await page.getByText('Created document 1.').waitFor()
    await page.getByRole('link', { name: 'Document 1' }).waitFor()
    // 24 more through the query console, in the database the page is looking at.
    await page.goto(`${server.url}/console/#/query/shop`)
    const creates = Array.from({ length: 24 }, (_, i) => `Create(Ref(Collection("pets"), "${i + 2}"), {data: {n: ${i + 2}}})`)
    await runQuery(`Do(${creates.join(',\n   ')}, "done")`)
    assert.equal(await runQuery('Count(Documents(Collection("pets")))'), '25')
    assert.equal(await runQuery('Select(["data", "name"], Get(Match(Index("pets_by_kind"), "dog")))'), '"Rex"')
    assert.match(await runQuery('Get(Ref(Collection("pets"), "1"))'), /ref: Ref\(Collection\("pets"\), "1"\)/)
    await screenshot(page, 'console-3-query')
    const err = await runQuery('Paginate(Collections(]')
    assert.match(err, /invalid expression: .*\(line 1, column 22\)/)
    await page.goto(`${server.url}/console/#/db/shop/@collection/pets`)
    const rows = page.getByRole('table', { name: 'Documents of pets' }).locator('tbody tr')
    await page.getByText('Page 1 · 20 documents').waitFor()
    assert.equal(await rows.count(), 20)
    await page.getByRole('button', { name: 'Next page' }).click()
    await page.getByText('Page 2 · 5 documents').waitFor()
    assert.equal(await rows.count(), 5)
    assert.equal(await page.getByRole('button', { name: 'Next page' }).isDisabled(), true)
    await screenshot(page, 'console-4-documents-page-2')
    await page.getByRole('button', { name: 'Previous page' }).click()
    await page.getByText('Page 1 · 20 documents').waitFor()
  })

  it('shows a document’s every version, what changed, and an old version', async () => {
    await page.getByRole('link', { name: 'Document 1', exact: true }).click()
    await page.getByRole('heading', { name: 'Document Ref(Collection("pets"), "1")' }).waitFor()
    await page.getByLabel('Update data').fill('{name: "Max", age: 3}')
    await page.getByRole('button', { name: 'Update document' }).click()
    await page.getByRole('heading', { name: 'History (2 versions)' }).waitFor()
    const history = page.getByRole('table', { name: 'Every version, newest first' })
    const [newest, oldest] = await history.locator('tbody tr').all()
    assert.match(await newest.textContent(), /update.*age added: 3.*name: "Rex" → "Max"/s)
    assert.doesNotMatch(await newest.textContent(), /kind/, 'the update left kind alone')
    assert.match(await oldest.textContent(), /create.*kind added: "dog".*name added: "Rex"/s)
    await oldest.getByRole('button', { name: /^Show version at / }).click()
    const version = page.getByRole('region', { name: 'Old version', exact: true })
    await version.getByText('name: "Rex"').waitFor()
    await screenshot(page, 'console-5-history')
  })

  it('shows the ledger head and recent blocks, hashes checked in the browser', async () => {
    await page.getByRole('link', { name: 'Ledger' }).click()
    await page.getByRole('heading', { name: 'Ledger', level: 1 }).waitFor()
    const { height } = JSON.parse(
      (await rawRequest(server.port, { method: 'GET', path: '/ledger/head', headers: { authorization: `Bearer ${server.rootKey}` } })).body
    )
    assert.equal(Number(await page.getByLabel('Head height').textContent()), height)
    // Every write above made a block; each one shown is checked.
    const rows = page.getByRole('table', { name: /hashes recomputed in this browser/ }).locator('tbody tr')
    const shown = await rows.count()
    assert.ok(shown >= 8, `${shown} blocks shown`)
    assert.equal(await page.getByRole('cell', { name: 'verified', exact: true }).count(), shown)
    // The signed head's signature (Ed25519) and the newest transaction's inclusion proof
    // (SHA-256, RFC 9162) are checked in the page.
    const sth = JSON.parse(
      (await rawRequest(server.port, { method: 'GET', path: '/ledger/v1/get-sth', headers: { authorization: `Bearer ${server.rootKey}` } })).body
    )
    assert.equal(Number(await page.getByLabel('Tree size').textContent()), sth.tree_size)
    await page.getByLabel('Signatures').filter({ hasText: /^verified: 1 of 1 member signature/ }).waitFor()
    const result = page.getByRole('status', { name: 'Proof result' })
    await result.filter({ hasText: new RegExp(`^verified: transaction ${sth.tree_size - 1} .* is in the tree of ${sth.tree_size} transactions`) }).waitFor()
    await screenshot(page, 'console-6-ledger')
    // Another transaction, then a proof the server spoiled: the page says it failed.
    await page.getByLabel('Transaction number').fill('2')
    await page.getByRole('button', { name: 'Check proof' }).click()
    await result.filter({ hasText: /^verified: transaction 2 / }).waitFor()
    await page.route('**/ledger/v1/get-proof-by-hash*', async route => {
      const res = await route.fetch()
      const body = await res.json()
      const first = Buffer.from(body.audit_path[0], 'base64')
      first[0] ^= 1
      body.audit_path[0] = first.toString('base64')
      await route.fulfill({ response: res, json: body })
    })
    await page.getByRole('button', { name: 'Check proof' }).click()
    await result.filter({ hasText: /^failed: the audit path does not lead from leaf 2 to the head’s root/ }).waitFor()
    await screenshot(page, 'console-7-proof-failed')
    await page.unroute('**/ledger/v1/get-proof-by-hash*')
    // The refused secret (401) and the syntax error (400) above were provoked; nothing else.
    assert.deepEqual(errors.filter(e => !/Failed to load resource: .* (401|400)/.test(e)), [])
  })

  it('signs out and forgets the secret', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.getByLabel('Secret').waitFor()
    assert.equal(await page.evaluate(() => sessionStorage.length), 0)
  })
})

describe('a new user’s first minute', { timeout: 120_000, ...skipUnlessBrowser() }, () => {
  let server, browser

  after(async () => {
    if (browser) await browser.close()
    if (server) await server.stop()
  })

  it('opens the address `tally serve` printed, signs in with the root key and sees the data', async () => {
    server = await startServer()
    const admin = server.adminClient()
    await admin.query(q.CreateCollection({ name: 'players' }))
    for (const name of ['Alice', 'Bob', 'Carol']) await admin.query(q.Create(q.Collection('players'), { data: { name } }))
    const url = server.output.match(/web console: (\S+)/)[1]
    let context
    ;({ browser, context } = await launch())
    const page = await context.newPage()
    const errors = watchErrors(page)
    await page.goto(url)
    await page.getByLabel('Secret').fill(server.rootKey)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('link', { name: 'players' }).first().click()
    const rows = page.getByRole('table', { name: 'Documents of players' }).locator('tbody tr')
    await page.getByText('Page 1 · 3 documents').waitFor()
    assert.equal(await rows.count(), 3)
    assert.match(await rows.first().textContent(), /name: "(Alice|Bob|Carol)"/)
    await screenshot(page, 'console-0-first-minute')
    assert.deepEqual(errors, [])
  })
})
