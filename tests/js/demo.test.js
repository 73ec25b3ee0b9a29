'use strict'
// `tally demo animal-exchange` in a real browser (headless Chromium): the command
// provisions the app on a running server and prints the market page's address; the page
// holds only a key that may call `purchase` and `list_market` and stream the purchase
// index (refs and times, nothing of a purchase's content). Buying by click moves credits
// and ownership and shows in the purchase log; a refused purchase shows why; another
// tab's purchase arrives through the stream, with no polling in between.
// Screenshots: tests/js/artifacts/demo-*.png.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { execFile } = require('node:child_process')
const { promisify } = require('node:util')

const { startServer, q, sleep } = require('./helpers/server')
const { skipUnlessBrowser, launch, screenshot, watchErrors } = require('./helpers/browser')

const run = promisify(execFile)

describe('tally demo animal-exchange in a browser', { timeout: 120_000, ...skipUnlessBrowser() }, () => {
  let server, browser, context, page, marketUrl, errors

  before(async () => {
    server = await startServer()
    const { stdout } = await run(server.bin, ['demo', 'animal-exchange', '--endpoint', server.url], {
      env: { ...process.env, TALLY_ROOT_KEY: server.rootKey },
      timeout: 30_000,
    })
    marketUrl = stdout.match(/Open the market: (\S+)/)[1]
    ;({ browser, context } = await launch())
    page = await context.newPage()
    errors = watchErrors(page)
  })

  after(async () => {
    if (browser) await browser.close()
    if (server) await server.stop()
  })

  const credits = name => page.getByRole('cell', { name: `${name}'s credits` })
  const owner = label => page.getByRole('cell', { name: `Owner of ${label}` })
  const outcome = () => page.getByRole('status', { name: 'Last purchase' })

  it('provisions a fresh database each time it runs', async () => {
    const again = await run(server.bin, ['demo', 'animal-exchange', '--endpoint', server.url], {
      env: { ...process.env, TALLY_ROOT_KEY: server.rootKey },
    })
    assert.match(again.stdout, /ready in database "animal_exchange_2"/)
    const dbs = await server.adminClient().query(q.Paginate(q.Databases()))
    assert.deepEqual(dbs.data.map(r => r.id).sort(), ['animal_exchange', 'animal_exchange_2'])
  })

  it('the key it hands the page may call the two functions, see when purchases happen, and nothing else', async () => {
    const key = decodeURIComponent(new URL(marketUrl).hash.replace(/^#key=/, ''))
    const client = server.client(key)
    assert.equal((await client.query(q.Call(q.Function('list_market')))).players.length, 3)
    const refused = [
      q.Get(q.Ref(q.Collection('items'), '1')),
      q.Paginate(q.Collections()),
      q.CreateKey({ role: 'admin' }),
      q.Create(q.Collection('purchases'), { data: {} }),
      q.Update(q.Ref(q.Collection('players'), '3'), { data: { credits: 1e6 } }),
    ]
    for (const query of refused) {
      await assert.rejects(client.query(query), e => e.requestResult.statusCode === 403, `refused: ${query}`)
    }
    // The purchase index, which the page streams, holds only [ts, ref] pairs; the
    // purchases behind the refs stay unreadable.
    const page = await client.query(q.Paginate(q.Match(q.Index('purchases_newest_first'))))
    assert.deepEqual(page.data, [])
    // v4 hides what a role may not read in Documents() rather than refusing the set.
    assert.deepEqual((await client.query(q.Paginate(q.Documents(q.Collection('purchases'))))).data, [])
  })

  it('shows balances, animals and owners, and moves the key out of the address', async () => {
    await page.goto(marketUrl)
    await credits('Alice').waitFor()
    assert.equal(new URL(page.url()).hash, '', 'the key left the address bar')
    assert.equal(await credits('Alice').textContent(), '1000')
    assert.equal(await credits('Carol').textContent(), '50')
    assert.equal(await owner('Dog').textContent(), 'Alice')
    assert.equal(await page.getByRole('button', { name: 'Buy Cat' }).count(), 0, 'Cat is not for sale')
    await screenshot(page, 'demo-1-market')
  })

  it('buying by click moves credits and ownership and logs the purchase', async () => {
    await page.getByLabel('Buyer').selectOption({ label: 'Bob' })
    await page.getByRole('button', { name: 'Buy Dog' }).click()
    await assert.doesNotReject(outcome().getByText('Bob → Dog: Purchase success!').waitFor())
    await page.getByRole('cell', { name: "Bob's credits" }).getByText('800').waitFor()
    assert.equal(await credits('Alice').textContent(), '1200')
    assert.equal(await owner('Dog').textContent(), 'Bob')
    assert.equal(await page.getByRole('button', { name: 'Buy Dog' }).count(), 0, 'Dog is off sale')
    const log = page.getByRole('region', { name: 'Purchase log' })
    await log.getByText('Bob bought Dog from Alice for 200').waitFor()
    await screenshot(page, 'demo-2-bought')
  })

  it('a refused purchase shows its reason and changes nothing', async () => {
    await page.getByLabel('Buyer').selectOption({ label: 'Carol' })
    await page.getByRole('button', { name: 'Buy Cow' }).click()
    await outcome().getByText('Carol → Cow: Purchase failed: insufficient funds').waitFor()
    assert.equal(await credits('Carol').textContent(), '50')
    assert.equal(await owner('Cow').textContent(), 'Bob')
    assert.equal(await page.getByRole('region', { name: 'Purchase log' }).getByRole('listitem').count(), 1)
    await screenshot(page, 'demo-3-refused')
  })

  it('another tab’s purchase reaches the log through the stream, with no polling meanwhile', async () => {
    const key = decodeURIComponent(new URL(marketUrl).hash.replace(/^#key=/, ''))
    const other = server.client(key)
    const purchase = refs => other.query(q.Call(q.Function('purchase'), ...refs))
    // The page keeps one stream open and asks for nothing while nothing happens.
    const queries = []
    const onRequest = r => {
      if (r.method() === 'POST' && new URL(r.url()).pathname === '/') queries.push(r.url())
    }
    page.on('request', onRequest)
    await sleep(2500)
    assert.deepEqual(queries, [], 'no list_market calls while the market is quiet')
    await page.getByRole('status', { name: 'Live updates' }).getByText('live: purchases arrive through a stream').waitFor()
    assert.equal(await purchase([q.Ref(q.Collection('items'), '5'), q.Ref(q.Collection('players'), '1')]), 'Purchase success!')
    await page.getByRole('region', { name: 'Purchase log' }).getByText('Alice bought Chicken from Carol for 20').waitFor()
    assert.equal(await owner('Chicken').textContent(), 'Alice')
    assert.equal(await credits('Carol').textContent(), '70')
    assert.ok(queries.length >= 1 && queries.length <= 2, `one refresh per purchase event, got ${queries.length}`)
    // What the key sees of the purchase: its time and ref from the index, not its content.
    const [[ts, purchaseRef]] = (await other.query(q.Paginate(q.Match(q.Index('purchases_newest_first')), { size: 1 }))).data
    assert.equal(typeof ts, 'number')
    await assert.rejects(other.query(q.Get(purchaseRef)), e => e.requestResult.statusCode === 403)
    assert.deepEqual((await other.query(q.Paginate(q.Documents(q.Collection('purchases'))))).data, [])
    page.off('request', onRequest)
    await screenshot(page, 'demo-4-streamed')
    assert.deepEqual(errors, [])
  })
})
