'use strict'
// The Animal Exchange sample app (Fauna's classic FQL v4 demo), driven through the
// official faunadb JS driver exactly the way the app's session service and model do it.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startServer, q, safeStringify } = require('./helpers/server')

const PURCHASE_RESULTS = new Set([
  'Purchase failed: item not for sale',
  'Item removed from sale',
  'Purchase failed: insufficient funds',
  'Purchase success!',
])

// ---------------------------------------------------------------------------
// Session service: what the app does when a visitor starts a session.
// ---------------------------------------------------------------------------

async function setupSession(server, dbName, players, makeItems) {
  const adminClient = server.adminClient()
  await adminClient.query(q.CreateDatabase({ name: dbName }))
  const key = await adminClient.query(
    q.CreateKey({ database: q.Database(dbName), role: 'server' })
  )
  assert.equal(typeof key.secret, 'string', 'CreateKey must return a secret')
  const client = server.client(key.secret)

  await client.query(
    q.Do(
      q.CreateClass({ name: 'players' }),
      q.CreateClass({ name: 'purchases' }),
      q.CreateClass({ name: 'items' })
    )
  )
  await client.query(
    q.Do(
      q.CreateIndex({ name: 'players', source: q.Class('players') }),
      q.CreateIndex({
        name: 'items_for_sale',
        source: q.Class('items'),
        terms: [{ field: ['data', 'for_sale'] }],
      }),
      q.CreateIndex({ name: 'purchases', source: q.Class('purchases') }),
      q.CreateIndex({
        name: 'items_by_owner',
        source: q.Class('items'),
        terms: [{ field: ['data', 'owner'] }],
      })
    )
  )
  const createdPlayers = await client.query(
    q.Map(players, p => q.Create(q.Class('players'), { data: p }))
  )
  const items = makeItems(createdPlayers)
  await client.query(q.Foreach(items, a => q.Create(q.Class('items'), { data: a })))

  // setupSession's connectivity check
  assert.equal(await client.query(true), true)
  return { client, secret: key.secret, players: createdPlayers }
}

// ---------------------------------------------------------------------------
// The model's queries, verbatim from the app.
// ---------------------------------------------------------------------------

function purchase(client, player, item) {
  return client.query(
    q.Let(
      { buyer: q.Get(player.ref), item: q.Get(item.ref) },
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
            q.Do(
              q.Update(q.Select('ref', q.Var('item')), { data: { for_sale: false } }),
              'Item removed from sale'
            ),
            q.If(
              q.LT(q.Var('buyerBalance'), q.Var('itemPrice')),
              'Purchase failed: insufficient funds',
              q.Do(
                q.Create(q.Class('purchases'), {
                  data: {
                    item: q.Select('ref', q.Var('item')),
                    price: q.Var('itemPrice'),
                    buyer: q.Select('ref', q.Var('buyer')),
                    seller: q.Select('ref', q.Var('seller')),
                  },
                }),
                q.Update(q.Select('ref', q.Var('buyer')), {
                  data: {
                    credits: q.Subtract(q.Var('buyerBalance'), q.Var('itemPrice')),
                  },
                }),
                q.Update(q.Select('ref', q.Var('seller')), {
                  data: {
                    credits: q.Add(
                      q.Select(['data', 'credits'], q.Var('seller')),
                      q.Var('itemPrice')
                    ),
                  },
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
  )
}

function listPurchases(client) {
  return client.query(
    q.Map(q.Paginate(q.Match(q.Index('purchases')), { before: null }), row =>
      q.Let(
        { row: q.Get(row) },
        q.Let(
          {
            buyer: q.Get(q.Select(['data', 'buyer'], q.Var('row'))),
            seller: q.Get(q.Select(['data', 'seller'], q.Var('row'))),
            price: q.Select(['data', 'price'], q.Var('row')),
            item: q.Get(q.Select(['data', 'item'], q.Var('row'))),
          },
          {
            buyer: q.Select(['data', 'name'], q.Var('buyer')),
            seller: q.Select(['data', 'name'], q.Var('seller')),
            price: q.Var('price'),
            label: q.Select(['data', 'label'], q.Var('item')),
            key: q.Select(['ref'], q.Var('row')),
          }
        )
      )
    )
  )
}

function listPlayers(client) {
  return client.query(q.Map(q.Paginate(q.Match(q.Index('players'))), row => q.Get(row)))
}

function runMakeForSaleQuery(client, item, price, forSale) {
  return client.query(q.Update(item.ref, { data: { price, for_sale: forSale } }))
}

function queryPlayerItems(client, refs) {
  return client.query(
    q.Map(refs, ref =>
      q.Select(
        'data',
        q.Map(q.Paginate(q.Match(q.Index('items_by_owner'), ref)), row => q.Get(row))
      )
    )
  )
}

function queryItemsForSale(client) {
  return client.query(
    q.Map(q.Paginate(q.Match(q.Index('items_for_sale'), true)), row =>
      q.Let(
        { doc: q.Get(row) },
        {
          ref: q.Select(['ref'], q.Var('doc')),
          data: {
            label: q.Select(['data', 'label'], q.Var('doc')),
            price: q.Select(['data', 'price'], q.Var('doc')),
            owner: q.Select(['data', 'owner'], q.Var('doc')),
            owner_name: q.Select(
              ['data', 'name'],
              q.Get(q.Select(['data', 'owner'], q.Var('doc')))
            ),
          },
        }
      )
    )
  )
}

// ---------------------------------------------------------------------------
// Test utilities
// ---------------------------------------------------------------------------

/** Deterministic PRNG (mulberry32). */
function mulberry32(seed) {
  let a = seed >>> 0
  return function() {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const refKey = ref => `${ref.collection ? ref.collection.id : ''}/${ref.id}`

async function playersByName(client) {
  const page = await listPlayers(client)
  const out = {}
  for (const p of page.data) out[p.data.name] = p
  return out
}

async function itemsByLabel(client, playerRefs) {
  const lists = await queryPlayerItems(client, playerRefs)
  const out = {}
  for (const list of lists) for (const it of list) out[it.data.label] = it
  return out
}

async function allPurchaseDocs(client) {
  const page = await client.query(
    q.Map(q.Paginate(q.Match(q.Index('purchases')), { size: 1000 }), row => q.Get(row))
  )
  assert.equal(page.after, undefined, 'expected all purchases on one page')
  return page.data
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

const PLAYERS = [
  { name: 'Alice', credits: 1000 },
  { name: 'Bob', credits: 1000 },
  { name: 'Carol', credits: 50 },
]

function demoItems(players) {
  const [alice, bob, carol] = players.map(p => p.ref)
  return [
    { label: '🐶 Dog', for_sale: true, owner: alice, price: 200 },
    { label: '🐱 Cat', for_sale: false, owner: alice, price: 75 },
    { label: '🐮 Cow', for_sale: true, owner: bob, price: 500 },
    { label: '🐷 Pig', for_sale: true, owner: bob, price: 60 },
    { label: '🐔 Chicken', for_sale: true, owner: carol, price: 20 },
    { label: '🦄 Unicorn', for_sale: true, owner: carol, price: 5000 },
  ]
}

describe('Animal Exchange', { timeout: 300_000 }, () => {
  let server
  let client
  let playerRefs

  before(async () => {
    server = await startServer()
    const session = await setupSession(server, 'animal_exchange_demo', PLAYERS, demoItems)
    client = session.client
    playerRefs = session.players.map(p => p.ref)
  })

  after(async () => {
    if (server) await server.stop()
  })

  it('setupSession creates the database, key, classes, indexes and data', async () => {
    assert.equal(await server.adminClient().query(true), true)
    for (const name of ['players', 'purchases', 'items']) {
      assert.equal(await client.query(q.Exists(q.Class(name))), true, `class ${name}`)
    }
    for (const name of ['players', 'items_for_sale', 'purchases', 'items_by_owner']) {
      assert.equal(await client.query(q.Exists(q.Index(name))), true, `index ${name}`)
    }
    // The Map over players returned the created documents.
    assert.equal(playerRefs.length, 3)
    for (const ref of playerRefs) {
      assert.equal(ref.collection.id, 'players')
      assert.match(ref.id, /^\d+$/)
    }
    // The database exists in the root and the server key cannot see the root.
    assert.equal(
      await server.adminClient().query(q.Exists(q.Database('animal_exchange_demo'))),
      true
    )
    assert.equal(await client.query(q.Exists(q.Database('animal_exchange_demo'))), false)
  })

  it('listPlayers returns the three players with their credits', async () => {
    const page = await listPlayers(client)
    assert.equal(page.data.length, 3)
    const got = page.data.map(p => ({ name: p.data.name, credits: p.data.credits }))
    got.sort((a, b) => a.name.localeCompare(b.name))
    assert.deepEqual(got, PLAYERS)
    for (const p of page.data) {
      assert.equal(p.ref.collection.id, 'players')
      assert.equal(typeof p.ts, 'number')
    }
  })

  it('queryItemsForSale lists only for-sale items with owner names', async () => {
    const page = await queryItemsForSale(client)
    const got = page.data
      .map(it => [it.data.label, it.data.price, it.data.owner_name])
      .sort()
    assert.deepEqual(
      got,
      [
        ['🐔 Chicken', 20, 'Carol'],
        ['🐮 Cow', 500, 'Bob'],
        ['🐶 Dog', 200, 'Alice'],
        ['🐷 Pig', 60, 'Bob'],
        ['🦄 Unicorn', 5000, 'Carol'],
      ].sort()
    )
    for (const it of page.data) {
      assert.equal(it.ref.collection.id, 'items')
      assert.equal(it.data.owner.collection.id, 'players')
    }
  })

  it('queryPlayerItems returns each player\'s items', async () => {
    const lists = await queryPlayerItems(client, playerRefs)
    assert.equal(lists.length, 3)
    const labels = lists.map(l => l.map(it => it.data.label).sort())
    assert.deepEqual(labels, [
      ['🐱 Cat', '🐶 Dog'],
      ['🐮 Cow', '🐷 Pig'],
      ['🐔 Chicken', '🦄 Unicorn'],
    ])
    for (let i = 0; i < 3; i++) {
      for (const it of lists[i]) assert.ok(it.data.owner.equals(playerRefs[i]))
    }
  })

  it('purchase of an item that is not for sale fails and changes nothing', async () => {
    const players = await playersByName(client)
    const items = await itemsByLabel(client, playerRefs)
    const res = await purchase(client, players.Bob, items['🐱 Cat'])
    assert.equal(res, 'Purchase failed: item not for sale')
    const after = await playersByName(client)
    assert.equal(after.Bob.data.credits, 1000)
    assert.equal(after.Alice.data.credits, 1000)
    const cat = await client.query(q.Get(items['🐱 Cat'].ref))
    assert.ok(cat.data.owner.equals(players.Alice.ref))
    assert.equal(cat.data.for_sale, false)
    assert.equal((await listPurchases(client)).data.length, 0)
  })

  it('buyer == seller removes the item from sale', async () => {
    const players = await playersByName(client)
    const items = await itemsByLabel(client, playerRefs)
    const dog = items['🐶 Dog']
    const res = await purchase(client, players.Alice, dog)
    assert.equal(res, 'Item removed from sale')
    const dogNow = await client.query(q.Get(dog.ref))
    assert.equal(dogNow.data.for_sale, false)
    assert.ok(dogNow.data.owner.equals(players.Alice.ref))
    assert.equal(dogNow.data.price, 200)
    assert.equal((await playersByName(client)).Alice.data.credits, 1000)
    assert.equal((await listPurchases(client)).data.length, 0)
    const forSale = (await queryItemsForSale(client)).data.map(i => i.data.label)
    assert.ok(!forSale.includes('🐶 Dog'), 'Dog must be gone from items_for_sale')

    // Put it back on sale the way the app does.
    const updated = await runMakeForSaleQuery(client, dog, 200, true)
    assert.equal(updated.data.for_sale, true)
    assert.equal(updated.data.price, 200)
    assert.equal(updated.data.label, '🐶 Dog', 'Update must merge, not replace')
    const forSale2 = (await queryItemsForSale(client)).data.map(i => i.data.label)
    assert.ok(forSale2.includes('🐶 Dog'))
  })

  it('purchase with insufficient funds fails and changes nothing', async () => {
    const players = await playersByName(client)
    const items = await itemsByLabel(client, playerRefs)
    const res = await purchase(client, players.Carol, items['🐮 Cow'])
    assert.equal(res, 'Purchase failed: insufficient funds')
    const after = await playersByName(client)
    assert.equal(after.Carol.data.credits, 50)
    assert.equal(after.Bob.data.credits, 1000)
    const cow = await client.query(q.Get(items['🐮 Cow'].ref))
    assert.ok(cow.data.owner.equals(players.Bob.ref))
    assert.equal(cow.data.for_sale, true)
    assert.equal((await listPurchases(client)).data.length, 0)
  })

  it('successful purchase moves credits, writes a purchase, changes the owner', async () => {
    const players = await playersByName(client)
    const items = await itemsByLabel(client, playerRefs)
    const dog = items['🐶 Dog']
    const res = await purchase(client, players.Bob, dog)
    assert.equal(res, 'Purchase success!')

    const after = await playersByName(client)
    assert.equal(after.Bob.data.credits, 800)
    assert.equal(after.Alice.data.credits, 1200)
    assert.equal(after.Carol.data.credits, 50)

    const dogNow = await client.query(q.Get(dog.ref))
    assert.ok(dogNow.data.owner.equals(players.Bob.ref))
    assert.equal(dogNow.data.for_sale, false)
    assert.equal(dogNow.data.label, '🐶 Dog')

    const purchases = await listPurchases(client)
    assert.equal(purchases.data.length, 1)
    const p = purchases.data[0]
    assert.equal(p.buyer, 'Bob')
    assert.equal(p.seller, 'Alice')
    assert.equal(p.price, 200)
    assert.equal(p.label, '🐶 Dog')
    assert.equal(p.key.collection.id, 'purchases')

    const raw = await client.query(q.Get(p.key))
    assert.ok(raw.data.item.equals(dog.ref))
    assert.ok(raw.data.buyer.equals(players.Bob.ref))
    assert.ok(raw.data.seller.equals(players.Alice.ref))
    assert.equal(raw.data.price, 200)

    // Index maintenance: the dog moved from Alice's list to Bob's.
    const lists = await queryPlayerItems(client, [players.Alice.ref, players.Bob.ref])
    assert.deepEqual(lists[0].map(i => i.data.label), ['🐱 Cat'])
    assert.deepEqual(lists[1].map(i => i.data.label).sort(), ['🐮 Cow', '🐶 Dog', '🐷 Pig'])
    const forSale = (await queryItemsForSale(client)).data.map(i => i.data.label)
    assert.ok(!forSale.includes('🐶 Dog'))

    // Buying it again fails: it is no longer for sale.
    assert.equal(
      await purchase(client, players.Carol, dog),
      'Purchase failed: item not for sale'
    )
    // Carol cannot afford the pig; Alice can.
    assert.equal(
      await purchase(client, players.Carol, items['🐷 Pig']),
      'Purchase failed: insufficient funds'
    )
    assert.equal(await purchase(client, players.Alice, items['🐷 Pig']), 'Purchase success!')
    const final = await playersByName(client)
    assert.equal(final.Alice.data.credits, 1140)
    assert.equal(final.Bob.data.credits, 860)
    assert.equal(final.Carol.data.credits, 50)
    const all = (await listPurchases(client)).data
      .map(x => `${x.buyer}<-${x.seller}:${x.label}:${x.price}`)
      .sort()
    assert.deepEqual(all, ['Alice<-Bob:🐷 Pig:60', 'Bob<-Alice:🐶 Dog:200'])
  })
})

// ---------------------------------------------------------------------------
// Concurrency: hot items, many simultaneous purchase transactions.
// ---------------------------------------------------------------------------

const HOT_PLAYERS = [
  { name: 'P1', credits: 1000 },
  { name: 'P2', credits: 800 },
  { name: 'P3', credits: 600 },
  { name: 'P4', credits: 400 },
  { name: 'P5', credits: 200 },
  { name: 'P6', credits: 100 },
]
const HOT_PRICES = [50, 75, 100, 150, 200, 250, 300, 400, 500, 700]
const CONCURRENT_PURCHASES = 200

function hotItems(players) {
  return HOT_PRICES.map((price, i) => ({
    label: `hot-${i}`,
    for_sale: true,
    owner: players[i % players.length].ref,
    price,
  }))
}

describe('Animal Exchange under concurrency', { timeout: 600_000 }, () => {
  let server
  let client
  let players // [{ref, data}] from the session
  let items // [{ref, data}]
  const totalCredits = HOT_PLAYERS.reduce((s, p) => s + p.credits, 0)
  const balances = {} // expected credits by player ref key, replayed from purchases
  let purchasesSeen = 0

  before(async () => {
    server = await startServer()
    const session = await setupSession(server, 'animal_exchange_hot', HOT_PLAYERS, hotItems)
    client = session.client
    players = session.players
    for (const p of players) balances[refKey(p.ref)] = p.data.credits
    const byLabel = await itemsByLabel(client, players.map(p => p.ref))
    items = HOT_PRICES.map((_, i) => byLabel[`hot-${i}`])
    assert.ok(items.every(Boolean), 'all 10 hot items are indexed by owner')
  })

  after(async () => {
    if (server) await server.stop()
  })

  async function runRound(seed) {
    const startOwners = {}
    for (const it of items) {
      const doc = await client.query(q.Get(it.ref))
      startOwners[refKey(it.ref)] = refKey(doc.data.owner)
    }
    const rnd = mulberry32(seed)
    const jobs = []
    for (let i = 0; i < CONCURRENT_PURCHASES; i++) {
      const buyer = players[Math.floor(rnd() * players.length)]
      const item = items[Math.floor(rnd() * items.length)]
      jobs.push(
        purchase(client, buyer, item).then(
          r => ({ ok: true, r, buyer, item }),
          e => ({ ok: false, e, buyer, item })
        )
      )
    }
    const results = await Promise.all(jobs)

    const errors = results.filter(x => !x.ok)
    const describeErr = x =>
      `${x.e && x.e.name}: ${x.e && x.e.message} ${
        x.e && x.e.requestResult ? safeStringify(x.e.requestResult.responseContent) : ''
      }`
    assert.equal(
      errors.length,
      0,
      `${errors.length} of ${CONCURRENT_PURCHASES} purchases failed, e.g.:\n` +
        errors.slice(0, 5).map(describeErr).join('\n')
    )
    const contended = results.filter(x => !x.ok && /contended/i.test(describeErr(x)))
    assert.equal(contended.length, 0, 'no "contended transaction" errors')

    for (const x of results) {
      assert.ok(PURCHASE_RESULTS.has(x.r), `unexpected purchase result ${safeStringify(x.r)}`)
    }
    const successes = results.filter(x => x.r === 'Purchase success!').length

    // Purchase records: exactly one per success, each item sold at most once per round.
    const docs = await allPurchaseDocs(client)
    assert.equal(
      docs.length,
      purchasesSeen + successes,
      'purchase records == number of "Purchase success!" results'
    )
    docs.sort((a, b) => a.ts - b.ts)
    const fresh = docs.slice(purchasesSeen)
    assert.equal(fresh.length, successes)
    purchasesSeen = docs.length
    const soldThisRound = new Map()
    for (const d of fresh) {
      const k = refKey(d.data.item)
      assert.ok(!soldThisRound.has(k), `item ${k} sold twice in one round`)
      soldThisRound.set(k, d)
      const seller = refKey(d.data.seller)
      const buyer = refKey(d.data.buyer)
      assert.notEqual(buyer, seller)
      assert.equal(seller, startOwners[k], 'seller is the owner at round start')
      balances[buyer] -= d.data.price
      balances[seller] += d.data.price
    }

    // Credits: conserved in total, and each balance matches the replayed purchases.
    const page = await listPlayers(client)
    assert.equal(page.data.length, HOT_PLAYERS.length)
    let sum = 0
    for (const p of page.data) {
      sum += p.data.credits
      assert.ok(p.data.credits >= 0, `${p.data.name} has negative credits`)
      assert.equal(
        p.data.credits,
        balances[refKey(p.ref)],
        `${p.data.name}'s credits match the purchase records`
      )
    }
    assert.equal(sum, totalCredits, 'total credits conserved')

    // Every item has exactly one owner, consistent between documents and index.
    const lists = await queryPlayerItems(client, players.map(p => p.ref))
    const seen = new Map()
    lists.forEach((list, i) => {
      for (const it of list) {
        const k = refKey(it.ref)
        assert.ok(!seen.has(k), `item ${it.data.label} listed under two owners`)
        seen.set(k, i)
        assert.equal(refKey(it.data.owner), refKey(players[i].ref))
      }
    })
    assert.equal(seen.size, items.length, 'every item appears under exactly one owner')
    for (const it of items) {
      const doc = await client.query(q.Get(it.ref))
      const k = refKey(it.ref)
      const sale = soldThisRound.get(k)
      const expectedOwner = sale ? refKey(sale.data.buyer) : startOwners[k]
      assert.equal(refKey(doc.data.owner), expectedOwner, `owner of ${doc.data.label}`)
      if (sale) assert.equal(doc.data.for_sale, false)
    }
    return { successes, results }
  }

  const tally = results => {
    const counts = {}
    for (const x of results) counts[x.r] = (counts[x.r] || 0) + 1
    return JSON.stringify(counts)
  }

  it('200 concurrent purchases: no errors, credits conserved, one owner per item', async t => {
    const { successes, results } = await runRound(0xc0ffee)
    t.diagnostic(`round 1 outcomes: ${tally(results)}`)
    assert.ok(successes >= 1, 'at least one purchase succeeded')
  })

  it('relisting everything and another 200 concurrent purchases keeps invariants', async t => {
    await Promise.all(items.map(it => runMakeForSaleQuery(client, it, it.data.price, true)))
    const forSale = await queryItemsForSale(client)
    assert.equal(forSale.data.length, items.length)
    const { successes, results } = await runRound(12345)
    t.diagnostic(`round 2 outcomes: ${tally(results)}`)
    assert.ok(successes >= 1, 'at least one purchase succeeded')
  })
})

// ---------------------------------------------------------------------------
// The live purchase log (issue 15): a set stream on `purchases`, through the driver's
// `client.stream(...)`, sees every purchase of a 200-purchase concurrent run exactly
// once, in commit order. Completeness is checked by ids against the stored purchases,
// and the end of the run by a sentinel purchase written after it (no sleeping).
// ---------------------------------------------------------------------------

const LOG_PLAYERS = Array.from({ length: 20 }, (_, i) => ({ name: `L${i}`, credits: 1_000_000 }))
const LOG_PURCHASES = 200

/** Subscribe `sub`; resolves with its events once `until(events)` holds. */
function streamEvents(sub, until, ms = 120_000) {
  const events = []
  return {
    events,
    done: new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`stream timed out after ${events.length} events`)), ms)
      for (const type of ['start', 'set', 'error']) {
        sub.on(type, (data, raw) => {
          events.push({ type, data, txn: raw && raw.txn })
          if (type === 'error') {
            clearTimeout(timer)
            reject(new Error(`stream error: ${safeStringify(data)}`))
          } else if (until(events)) {
            clearTimeout(timer)
            resolve(events)
          }
        })
      }
      sub.start()
    }),
  }
}

describe('Animal Exchange live purchase log', { timeout: 300_000 }, () => {
  let server
  let client
  let players
  let items

  before(async () => {
    server = await startServer()
    const session = await setupSession(server, 'animal_exchange_log', LOG_PLAYERS, ps =>
      Array.from({ length: LOG_PURCHASES }, (_, i) => ({
        label: `log-${i}`,
        for_sale: true,
        owner: ps[i % ps.length].ref,
        price: 10 + i,
      }))
    )
    client = session.client
    players = session.players
    const page = await client.query(
      q.Map(q.Paginate(q.Match(q.Index('items_for_sale'), true), { size: 1000 }), r => q.Get(r))
    )
    items = page.data
    assert.equal(items.length, LOG_PURCHASES)
  })

  after(async () => {
    if (server) await server.stop()
  })

  it('a set stream on purchases sees each of 200 concurrent purchases exactly once', async () => {
    const sentinel = '999999999'
    const sawSentinel = evs => evs.some(e => e.type === 'set' && e.data.document.ref.id === sentinel)
    // The app's own index, and the collection: two live logs on one connection.
    const byIndex = client.stream(q.Match(q.Index('purchases')), { fields: ['action', 'document'] })
    const byColl = client.stream(q.Documents(q.Collection('purchases')))
    const logs = [streamEvents(byIndex, sawSentinel), streamEvents(byColl, sawSentinel)]
    for (const log of logs) {
      for (let i = 0; i < 1000 && !log.events.some(e => e.type === 'start'); i++) await new Promise(r => setTimeout(r, 10))
      assert.ok(log.events.some(e => e.type === 'start'), 'stream started')
    }

    // Every item bought once, concurrently, by a player other than its owner.
    const results = await Promise.all(
      items.map((item, i) => purchase(client, players[(i + 1) % players.length], item))
    )
    assert.deepEqual(new Set(results), new Set(['Purchase success!']))
    await client.query(q.Create(q.Ref(q.Class('purchases'), sentinel), { data: { sentinel: true } }))
    const all = await Promise.all(logs.map(l => l.done))
    byIndex.close()
    byColl.close()

    const stored = (await allPurchaseDocs(client)).filter(d => !d.data.sentinel)
    assert.equal(stored.length, LOG_PURCHASES)
    assert.deepEqual(new Set(stored.map(d => refKey(d.data.item))).size, LOG_PURCHASES)
    const storedTs = new Map(stored.map(d => [d.ref.id, d.ts]))
    for (const events of all) {
      const sets = events.filter(e => e.type === 'set' && e.data.document.ref.id !== sentinel)
      const ids = sets.map(e => e.data.document.ref.id)
      assert.equal(ids.length, LOG_PURCHASES, 'one event per purchase')
      assert.equal(new Set(ids).size, LOG_PURCHASES, 'no purchase twice')
      for (const e of sets) {
        assert.equal(e.data.action, 'add')
        assert.equal(e.data.document.ts, storedTs.get(e.data.document.ref.id), 'event ts is the purchase commit ts')
        assert.equal(e.txn, e.data.document.ts)
      }
      const txns = sets.map(e => e.txn)
      assert.deepEqual(txns, [...txns].sort((a, b) => a - b), 'in commit order')
      // The sentinel came after every purchase.
      assert.equal(events.filter(e => e.type === 'set').at(-1).data.document.ref.id, sentinel)
    }
  })
})
