'use strict'
// Core FQL v4 behaviour through the official faunadb JS driver: CRUD, indexes,
// pagination cursors, time travel, errors, response headers, keys/roles, nested
// databases, and value round trips.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const {
  startServer,
  q,
  faunadb,
  expectFaunaError,
  safeStringify,
} = require('./helpers/server')

const { values } = faunadb

let server

/** Create a child database of the root and return a client holding a key for it. */
async function newDb(name, role = 'server') {
  const admin = server.adminClient()
  await admin.query(q.CreateDatabase({ name }))
  const key = await admin.query(q.CreateKey({ database: q.Database(name), role }))
  return server.client(key.secret)
}

const range = n => Array.from({ length: n }, (_, i) => i)

describe('basics', { timeout: 300_000 }, () => {
  before(async () => {
    server = await startServer()
  })

  after(async () => {
    if (server) await server.stop()
  })

  // -------------------------------------------------------------------------
  describe('CRUD', () => {
    let c
    before(async () => {
      c = await newDb('crud')
    })

    it('CreateCollection returns the collection document', async () => {
      const res = await c.query(q.CreateCollection({ name: 'books' }))
      assert.equal(res.name, 'books')
      assert.ok(res.ref instanceof values.Ref)
      assert.equal(res.ref.id, 'books')
      assert.equal(res.ref.collection.id, 'collections')
      assert.equal(typeof res.ts, 'number')
      // The old name still works and refers to the same thing.
      assert.equal(await c.query(q.Exists(q.Class('books'))), true)
      assert.equal(await c.query(q.Equals(q.Class('books'), q.Collection('books'))), true)
    })

    it('Create, Get, Update, Replace, Delete', async () => {
      const data = {
        title: 'Dune',
        author: 'Herbert',
        year: 1965,
        tags: ['sf', 'classic'],
        meta: { pages: 412, lang: 'en' },
      }
      const doc = await c.query(q.Create(q.Collection('books'), { data }))
      assert.equal(doc.ref.collection.id, 'books')
      assert.match(doc.ref.id, /^\d+$/)
      assert.equal(typeof doc.ts, 'number')
      assert.deepEqual(doc.data, data)

      const got = await c.query(q.Get(doc.ref))
      assert.ok(got.ref.equals(doc.ref))
      assert.equal(got.ts, doc.ts)
      assert.deepEqual(got.data, data)

      // Update merges objects recursively, replaces arrays, and null removes a field.
      const upd = await c.query(
        q.Update(doc.ref, {
          data: { year: 1966, meta: { isbn: '0-441-17271-7', lang: null }, tags: ['sf'] },
        })
      )
      assert.ok(upd.ts > doc.ts, 'a write gets a later timestamp')
      assert.deepEqual(upd.data, {
        title: 'Dune',
        author: 'Herbert',
        year: 1966,
        tags: ['sf'],
        meta: { pages: 412, isbn: '0-441-17271-7' },
      })

      const rep = await c.query(q.Replace(doc.ref, { data: { title: 'Dune Messiah' } }))
      assert.deepEqual(rep.data, { title: 'Dune Messiah' })
      assert.deepEqual((await c.query(q.Get(doc.ref))).data, { title: 'Dune Messiah' })

      const del = await c.query(q.Delete(doc.ref))
      assert.ok(del.ref.equals(doc.ref))
      assert.equal(await c.query(q.Exists(doc.ref)), false)
      await expectFaunaError(c.query(q.Get(doc.ref)), 'NotFound', 'instance not found')
    })

    it('Create with an explicit id; creating it twice is "instance already exists"', async () => {
      const ref = q.Ref(q.Collection('books'), '1234')
      const doc = await c.query(q.Create(ref, { data: { x: 1 } }))
      assert.equal(doc.ref.id, '1234')
      assert.equal(doc.ref.collection.id, 'books')
      const err = await expectFaunaError(
        c.query(q.Create(ref, { data: { x: 2 } })),
        'BadRequest',
        'instance already exists'
      )
      assert.deepEqual(err.errors()[0].position, ['create'])
      assert.deepEqual((await c.query(q.Get(ref))).data, { x: 1 })
    })

    it('Do makes every write and answers its last value whole, whatever it drops', async () => {
      const ref = q.Ref(q.Collection('books'), '4242')
      await c.query(q.Create(ref, { data: { x: 1 } }))
      // The writes before the last are not rendered (their values are dropped); what
      // they wrote, and what their arguments read, is as if they had been.
      const last = await c.query(
        q.Do(
          q.Update(ref, { data: { x: 2 } }),
          q.Create(q.Ref(q.Collection('books'), '4243'), {
            data: { copied: q.Select(['data', 'x'], q.Get(ref)), doc: q.Update(ref, { data: { y: 1 } }) },
          }),
          q.Replace(ref, { data: { x: 3 } }),
          q.Update(ref, { data: { z: 4 } })
        )
      )
      assert.equal(last.ref.id, '4242')
      assert.deepEqual(last.data, { x: 3, z: 4 })
      assert.equal(typeof last.ts, 'number')
      const copy = await c.query(q.Get(q.Ref(q.Collection('books'), '4243')))
      assert.equal(copy.data.copied, 2)
      // A write nested in a dropped write's arguments is rendered: its value is used.
      assert.equal(copy.data.doc.ref.id, '4242')
      assert.deepEqual(copy.data.doc.data, { x: 2, y: 1 })
      // A write as Do's only (so last) expression answers the document.
      const only = await c.query(q.Do(q.Update(ref, { data: { w: 5 } })))
      assert.deepEqual(only.data, { x: 3, z: 4, w: 5 })
    })

    it('reads and writes of the same documents in one query see each other in order', async () => {
      // The executor decodes a document once per transaction and hands the decoding to
      // the write that follows the read; every read and write here must still see the
      // versions in order, as the transfers of one batch do.
      const a = q.Ref(q.Collection('books'), '5001')
      const b = q.Ref(q.Collection('books'), '5002')
      await c.query(q.Do(q.Create(a, { data: { n: 100 } }), q.Create(b, { data: { n: 0 } })))
      const before = (await c.query(q.Get(a))).ts
      const n = v => q.Select(['data', 'n'], v)
      const move = amount =>
        q.Let({ x: q.Get(a), y: q.Get(b) }, [
          n(q.Update(a, { data: { n: q.Subtract(n(q.Var('x')), amount) } })),
          n(q.Update(b, { data: { n: q.Add(n(q.Var('y')), amount) } })),
        ])
      // An array's elements are evaluated in order.
      const out = await c.query([
        move(10),
        move(20),
        // Read again after the writes: the newest of this query's own versions.
        q.Let({ x: q.Get(a), y: q.Get(b) }, [n(q.Var('x')), n(q.Var('y'))]),
        // Read at the time before the query: the version from before it.
        [n(q.At(before, q.Get(a))), n(q.Get(a))],
        q.Let({ gone: q.Get(b) }, [n(q.Var('gone')), q.Select(['ref', 'id'], q.Delete(b))]),
        [q.Exists(b), n(q.Get(a))],
      ])
      assert.deepEqual(out, [[90, 10], [70, 30], [70, 30], [100, 70], [30, '5002'], [false, 70]])
      // b is gone: the move's Get(b) fails and the query writes nothing.
      await expectFaunaError(c.query(move(5)), 'NotFound', 'instance not found')
      assert.deepEqual(await c.query([n(q.Get(a)), n(q.At(before, q.Get(a)))]), [70, 100])
      const again = await c.query([n(q.Create(b, { data: { n: 0 } })), move(1), move(2), [n(q.Get(a)), n(q.Get(b))]])
      assert.deepEqual(again, [0, [69, 1], [67, 3], [67, 3]])
    })

    it('a query is atomic: a failing Do writes nothing', async () => {
      const ref = q.Ref(q.Collection('books'), '777')
      await expectFaunaError(
        c.query(q.Do(q.Create(ref, { data: { x: 1 } }), q.Abort('nope'))),
        'BadRequest',
        'transaction aborted'
      )
      assert.equal(await c.query(q.Exists(ref)), false)
    })

    it('Let/Var/If/Do/Map/Foreach/Filter/Select evaluate', async () => {
      assert.equal(await c.query(q.Let({ a: 2, b: q.Add(q.Var('a'), 3) }, q.Multiply(q.Var('a'), q.Var('b')))), 10)
      assert.deepEqual(await c.query(q.Map([1, 2, 3], x => q.Multiply(x, x))), [1, 4, 9])
      assert.deepEqual(await c.query(q.Filter([1, 2, 3, 4], x => q.GT(x, 2))), [3, 4])
      assert.equal(await c.query(q.If(q.LT(1, 2), 'yes', 'no')), 'yes')
      assert.equal(await c.query(q.Select(['a', 1, 'b'], { a: [0, { b: 'deep' }] })), 'deep')
      assert.equal(await c.query(q.Select(['a', 'z'], { a: {} }, 'dflt')), 'dflt')
      assert.equal(await c.query(q.Concat(['a', 'b', 'c'], '-')), 'a-b-c')
    })
  })

  // -------------------------------------------------------------------------
  describe('indexes', () => {
    let c
    const books = [
      ['Dune', 'Herbert', 1965, ['sf', 'classic']],
      ['Children of Dune', 'Herbert', 1976, ['sf']],
      ['Dune Messiah', 'Herbert', 1969, ['sf']],
      ['Neuromancer', 'Gibson', 1984, ['sf', 'cyberpunk']],
      ['Count Zero', 'Gibson', 1986, ['cyberpunk']],
    ]
    const refs = {}

    before(async () => {
      c = await newDb('indexes')
      await c.query(q.CreateCollection({ name: 'books' }))
      await c.query(
        q.Do(
          q.CreateIndex({
            name: 'books_by_author',
            source: q.Collection('books'),
            terms: [{ field: ['data', 'author'] }],
            values: [{ field: ['data', 'year'] }, { field: ['ref'] }],
          }),
          q.CreateIndex({
            name: 'books_by_year_desc',
            source: q.Collection('books'),
            values: [{ field: ['data', 'year'], reverse: true }, { field: ['data', 'title'] }],
          }),
          q.CreateIndex({
            name: 'books_by_tag',
            source: q.Collection('books'),
            terms: [{ field: ['data', 'tags'] }],
            values: [{ field: ['data', 'title'] }],
          })
        )
      )
      const created = await c.query(
        q.Map(books, b =>
          q.Create(q.Collection('books'), {
            data: {
              title: q.Select(0, b),
              author: q.Select(1, b),
              year: q.Select(2, b),
              tags: q.Select(3, b),
            },
          })
        )
      )
      for (const d of created) refs[d.data.title] = d.ref
    })

    it('terms + values: matches sorted by the values', async () => {
      const page = await c.query(q.Paginate(q.Match(q.Index('books_by_author'), 'Herbert')))
      assert.deepEqual(
        page.data.map(([year]) => year),
        [1965, 1969, 1976]
      )
      assert.ok(page.data[0][1].equals(refs.Dune))
      assert.ok(page.data[1][1].equals(refs['Dune Messiah']))
      const none = await c.query(q.Paginate(q.Match(q.Index('books_by_author'), 'Asimov')))
      assert.deepEqual(none.data, [])
    })

    it('reverse value ordering and Reverse()', async () => {
      const page = await c.query(q.Paginate(q.Match(q.Index('books_by_year_desc'))))
      assert.deepEqual(page.data, [
        [1986, 'Count Zero'],
        [1984, 'Neuromancer'],
        [1976, 'Children of Dune'],
        [1969, 'Dune Messiah'],
        [1965, 'Dune'],
      ])
      const rev = await c.query(q.Paginate(q.Reverse(q.Match(q.Index('books_by_author'), 'Gibson'))))
      assert.deepEqual(rev.data.map(([y]) => y), [1986, 1984])
    })

    it('array fields are indexed element by element', async () => {
      const page = await c.query(q.Paginate(q.Match(q.Index('books_by_tag'), 'cyberpunk')))
      assert.deepEqual(page.data, ['Count Zero', 'Neuromancer'])
      const sf = await c.query(q.Paginate(q.Match(q.Index('books_by_tag'), 'sf')))
      assert.deepEqual(sf.data, ['Children of Dune', 'Dune', 'Dune Messiah', 'Neuromancer'])
    })

    it('index entries follow updates and deletes', async () => {
      const extra = await c.query(
        q.Create(q.Collection('books'), { data: { title: 'Foundation', author: 'Gibson', year: 1951 } })
      )
      let page = await c.query(q.Paginate(q.Match(q.Index('books_by_author'), 'Gibson')))
      assert.deepEqual(page.data.map(([y]) => y), [1951, 1984, 1986])
      await c.query(q.Update(extra.ref, { data: { author: 'Asimov' } }))
      page = await c.query(q.Paginate(q.Match(q.Index('books_by_author'), 'Gibson')))
      assert.deepEqual(page.data.map(([y]) => y), [1984, 1986])
      page = await c.query(q.Paginate(q.Match(q.Index('books_by_author'), 'Asimov')))
      assert.equal(page.data.length, 1)
      assert.ok(page.data[0][1].equals(extra.ref))
      await c.query(q.Delete(extra.ref))
      page = await c.query(q.Paginate(q.Match(q.Index('books_by_author'), 'Asimov')))
      assert.deepEqual(page.data, [])
    })

    it('an index created over existing documents is active and complete', async () => {
      const idx = await c.query(
        q.CreateIndex({
          name: 'books_by_title',
          source: q.Collection('books'),
          terms: [{ field: ['data', 'title'] }],
        })
      )
      assert.equal(idx.name, 'books_by_title')
      assert.equal(idx.ref.collection.id, 'indexes')
      assert.equal((await c.query(q.Get(q.Index('books_by_title')))).active, true)
      const page = await c.query(q.Paginate(q.Match(q.Index('books_by_title'), 'Neuromancer')))
      assert.equal(page.data.length, 1)
      assert.ok(page.data[0].equals(refs.Neuromancer))
    })

    it('unique index rejects duplicates with "instance not unique"', async () => {
      await c.query(q.CreateCollection({ name: 'users' }))
      await c.query(
        q.CreateIndex({
          name: 'users_by_email',
          source: q.Collection('users'),
          terms: [{ field: ['data', 'email'] }],
          unique: true,
        })
      )
      const a = await c.query(q.Create(q.Collection('users'), { data: { email: 'a@example.com' } }))
      await expectFaunaError(
        c.query(q.Create(q.Collection('users'), { data: { email: 'a@example.com' } })),
        'BadRequest',
        'instance not unique'
      )
      const b = await c.query(q.Create(q.Collection('users'), { data: { email: 'b@example.com' } }))
      await expectFaunaError(
        c.query(q.Update(b.ref, { data: { email: 'a@example.com' } })),
        'BadRequest',
        'instance not unique'
      )
      // Two documents with the same value inside one transaction are also rejected.
      await expectFaunaError(
        c.query(
          q.Do(
            q.Create(q.Collection('users'), { data: { email: 'c@example.com' } }),
            q.Create(q.Collection('users'), { data: { email: 'c@example.com' } })
          )
        ),
        'BadRequest',
        'instance not unique'
      )
      const page = await c.query(q.Paginate(q.Documents(q.Collection('users'))))
      assert.equal(page.data.length, 2, 'failed writes left nothing behind')
      // Once the holder is gone, the value is free again.
      await c.query(q.Delete(a.ref))
      const a2 = await c.query(q.Create(q.Collection('users'), { data: { email: 'a@example.com' } }))
      const m = await c.query(q.Get(q.Match(q.Index('users_by_email'), 'a@example.com')))
      assert.ok(m.ref.equals(a2.ref))
    })
  })

  // -------------------------------------------------------------------------
  describe('pagination', () => {
    let c
    const N = 25
    const nOf = page => page.data.map(x => x[0])

    before(async () => {
      c = await newDb('pagination')
      await c.query(q.CreateCollection({ name: 'nums' }))
      await c.query(
        q.CreateIndex({
          name: 'nums_by_n',
          source: q.Collection('nums'),
          values: [{ field: ['data', 'n'] }, { field: ['ref'] }],
        })
      )
      // Insert in a scrambled order so sorting is the index's job.
      const order = range(N).map(i => (i * 7) % N)
      await c.query(q.Foreach(order, n => q.Create(q.Collection('nums'), { data: { n } })))
    })

    it('size and after cursors walk forward', async () => {
      const set = q.Match(q.Index('nums_by_n'))
      const p1 = await c.query(q.Paginate(set, { size: 10 }))
      assert.deepEqual(nOf(p1), range(10))
      assert.equal(p1.before, undefined, 'first page has no before cursor')
      assert.ok(p1.after !== undefined, 'first page has an after cursor')

      const p2 = await c.query(q.Paginate(set, { size: 10, after: p1.after }))
      assert.deepEqual(nOf(p2), range(10).map(i => i + 10))
      assert.ok(p2.before !== undefined && p2.after !== undefined)

      const p3 = await c.query(q.Paginate(set, { size: 10, after: p2.after }))
      assert.deepEqual(nOf(p3), range(5).map(i => i + 20))
      assert.equal(p3.after, undefined, 'last page has no after cursor')

      // before cursors walk back.
      const b2 = await c.query(q.Paginate(set, { size: 10, before: p3.before }))
      assert.deepEqual(nOf(b2), range(10).map(i => i + 10))
      const b1 = await c.query(q.Paginate(set, { size: 10, before: p2.before }))
      assert.deepEqual(nOf(b1), range(10))
    })

    it('before: null returns the last page; partial cursors are accepted', async () => {
      const set = q.Match(q.Index('nums_by_n'))
      const last = await c.query(q.Paginate(set, { size: 10, before: null }))
      assert.deepEqual(nOf(last), range(10).map(i => i + 15))
      assert.ok(last.before !== undefined)

      const fromTwelve = await c.query(q.Paginate(set, { size: 10, after: [12] }))
      assert.deepEqual(nOf(fromTwelve), range(10).map(i => i + 12))
      const beforeThirteen = await c.query(q.Paginate(set, { size: 10, before: [13] }))
      assert.deepEqual(nOf(beforeThirteen), range(10).map(i => i + 3))
    })

    it('the driver PageHelper iterates the whole set both ways', async () => {
      const set = q.Match(q.Index('nums_by_n'))
      const fwd = []
      await c.paginate(set, { size: 7 }).each(page => {
        for (const x of page) fwd.push(x[0])
      })
      assert.deepEqual(fwd, range(N))
      const back = []
      await c.paginate(set, { size: 6, before: null }).eachReverse(page => {
        for (const x of page.reverse()) back.push(x[0])
      })
      assert.deepEqual(back, range(N).reverse())
    })

    it('Documents(), Count() and Map over a page', async () => {
      const page = await c.query(
        q.Map(q.Paginate(q.Documents(q.Collection('nums')), { size: 100 }), r =>
          q.Select(['data', 'n'], q.Get(r))
        )
      )
      assert.deepEqual([...page.data].sort((a, b) => a - b), range(N))
      assert.equal(await c.query(q.Count(q.Documents(q.Collection('nums')))), N)
      const small = await c.query(q.Paginate(q.Documents(q.Collection('nums')), { size: 3 }))
      assert.equal(small.data.length, 3)
      assert.ok(small.after !== undefined)
    })
  })

  // -------------------------------------------------------------------------
  describe('time travel', () => {
    let c
    let history = null
    before(async () => {
      c = await newDb('timetravel')
      await c.query(q.CreateCollection({ name: 'things' }))
      await c.query(
        q.CreateIndex({
          name: 'things_v',
          source: q.Collection('things'),
          values: [{ field: ['data', 'v'] }],
        })
      )
    })

    it('At() and Get(ref, ts) read past versions', async () => {
      const v1 = await c.query(q.Create(q.Collection('things'), { data: { v: 1 } }))
      const v2 = await c.query(q.Update(v1.ref, { data: { v: 2 } }))
      const v3 = await c.query(q.Update(v1.ref, { data: { v: 3 } }))
      assert.ok(v1.ts < v2.ts && v2.ts < v3.ts)

      assert.equal((await c.query(q.At(v1.ts, q.Get(v1.ref)))).data.v, 1)
      assert.equal((await c.query(q.At(v2.ts, q.Get(v1.ref)))).data.v, 2)
      assert.equal((await c.query(q.Get(v1.ref, v1.ts))).data.v, 1)
      assert.equal((await c.query(q.Get(v1.ref))).data.v, 3)
      assert.equal(await c.query(q.At(v1.ts - 1, q.Exists(v1.ref))), false)
      assert.equal(await c.query(q.At(v1.ts, q.Exists(v1.ref))), true)
      // At with a Time value.
      const asTime = await c.query(q.At(q.Epoch(v2.ts, 'microseconds'), q.Get(v1.ref)))
      assert.equal(asTime.data.v, 2)
      // Indexes travel too.
      const idxThen = await c.query(q.At(v2.ts, q.Paginate(q.Match(q.Index('things_v')))))
      assert.deepEqual(idxThen.data, [2])

      await c.query(q.Delete(v1.ref))
      assert.equal(await c.query(q.Exists(v1.ref)), false)
      assert.equal((await c.query(q.At(v3.ts, q.Get(v1.ref)))).data.v, 3, 'history survives delete')
      history = { ref: v1.ref, ts: [v1.ts, v2.ts, v3.ts] }
    })

    it('Paginate(Events(ref)) lists a document\'s history', async () => {
      assert.ok(history, 'depends on the previous test')
      const v1 = { ref: history.ref, ts: history.ts[0] }
      const [, v2ts, v3ts] = history.ts
      const events = await c.query(q.Paginate(q.Events(v1.ref)))
      assert.deepEqual(
        events.data.map(e => e.action),
        ['create', 'update', 'update', 'delete']
      )
      for (const e of events.data) assert.ok(e.document.equals(v1.ref))
      assert.deepEqual(
        events.data.slice(0, 3).map(e => e.ts),
        [v1.ts, v2ts, v3ts]
      )
      assert.equal(events.data[1].data.v, 2)
    })
  })

  // -------------------------------------------------------------------------
  describe('errors', () => {
    let c
    before(async () => {
      c = await newDb('errors')
      await c.query(q.CreateCollection({ name: 'things' }))
    })

    it('unknown function -> BadRequest "invalid expression"', async () => {
      const err = await expectFaunaError(
        c.query(new faunadb.Expr({ no_such_function: 1 })),
        'BadRequest',
        'invalid expression'
      )
      assert.equal(err.requestResult.statusCode, 400)
      assert.ok(Array.isArray(err.errors()[0].position))
      assert.equal(typeof err.description, 'string')
      await expectFaunaError(c.query(q.Var('unbound')), 'BadRequest', 'invalid expression')
    })

    it('Add(1, "two") -> BadRequest "invalid argument" at ["add", 1]', async () => {
      const err = await expectFaunaError(c.query(q.Add(1, 'two')), 'BadRequest', 'invalid argument')
      assert.deepEqual(err.errors()[0].position, ['add', 1])
    })

    it('Get of a missing document -> NotFound "instance not found"', async () => {
      const err = await expectFaunaError(
        c.query(q.Get(q.Ref(q.Collection('things'), '404404'))),
        'NotFound',
        'instance not found'
      )
      assert.equal(err.requestResult.statusCode, 404)
    })

    it('Select of a missing path -> NotFound "value not found"', async () => {
      const err = await expectFaunaError(c.query(q.Select('a', {})), 'NotFound', 'value not found')
      assert.deepEqual(err.errors()[0].position, ['from'])
    })

    it('Abort -> BadRequest "transaction aborted" with the message', async () => {
      const err = await expectFaunaError(c.query(q.Abort('boom')), 'BadRequest', 'transaction aborted')
      assert.equal(err.errors()[0].description, 'boom')
    })

    it('schema validation -> "validation failed" with failures', async () => {
      const err = await expectFaunaError(
        c.query(q.CreateCollection({ name: 123 })),
        'BadRequest',
        'validation failed'
      )
      const e0 = err.errors()[0]
      assert.deepEqual(e0.position, ['create_collection'])
      assert.ok(Array.isArray(e0.failures) && e0.failures.length === 1, safeStringify(e0))
      assert.equal(e0.failures[0].code, 'invalid type')
      assert.deepEqual(e0.failures[0].field, ['name'])
    })

    it('an error inside a UDF -> "call error" with the cause', async () => {
      await c.query(
        q.CreateFunction({
          name: 'explode',
          body: q.Query(q.Lambda([], q.Abort('custom error here'))),
        })
      )
      const err = await expectFaunaError(c.query(q.Call(q.Function('explode'))), 'BadRequest', 'call error')
      const cause = err.errors()[0].cause
      assert.ok(Array.isArray(cause) && cause.length >= 1, safeStringify(err.errors()))
      assert.equal(cause[0].code, 'transaction aborted')
      assert.equal(cause[0].description, 'custom error here')
    })

    it('bad secret -> Unauthorized', async () => {
      const bad = server.client('not-a-real-secret')
      const err = await expectFaunaError(bad.query(q.Add(1, 1)), 'Unauthorized', 'unauthorized')
      assert.equal(err.requestResult.statusCode, 401)
      const none = server.client('')
      await expectFaunaError(none.query(1), 'Unauthorized', 'unauthorized')
    })
  })

  // -------------------------------------------------------------------------
  describe('response headers and driver hooks', () => {
    it('x-txn-time on every response; getLastTxnTime tracks writes', async () => {
      const seen = []
      const admin = server.adminClient()
      await admin.query(q.CreateDatabase({ name: 'headers' }))
      const key = await admin.query(q.CreateKey({ database: q.Database('headers'), role: 'server' }))
      const c = server.client(key.secret, { observer: r => seen.push(r) })

      assert.equal(await c.query(q.Add(1, 1)), 2)
      assert.equal(seen.length, 1)
      assert.equal(seen[0].statusCode, 200)
      const h = seen[0].responseHeaders
      assert.match(String(h['x-txn-time']), /^\d+$/, `x-txn-time: ${safeStringify(h)}`)
      const readTs = c.getLastTxnTime()
      assert.equal(readTs, parseInt(h['x-txn-time'], 10))

      await c.query(q.CreateCollection({ name: 'hdr' }))
      const doc = await c.query(q.Create(q.Collection('hdr'), { data: { a: 1 } }))
      assert.ok(c.getLastTxnTime() > readTs)
      assert.equal(c.getLastTxnTime(), doc.ts, 'x-txn-time of a write is its commit ts')

      // A read right after the write sees it, and time never goes backwards.
      const again = await c.query(q.Get(doc.ref))
      assert.equal(again.ts, doc.ts)
      assert.ok(c.getLastTxnTime() >= doc.ts)

      // Errors carry the header too, and the per-query observer fires.
      let perQuery = null
      await assert.rejects(c.query(q.Abort('x'), { observer: r => (perQuery = r) }))
      assert.equal(perQuery.statusCode, 400)
      assert.ok(perQuery.responseHeaders['x-txn-time'] !== undefined)
    })

    it('queryWithMetrics reports the metrics headers', async () => {
      const c = server.adminClient()
      const res = await c.queryWithMetrics(q.Add(1, 1))
      assert.equal(res.value, 2)
      for (const k of ['x-compute-ops', 'x-byte-read-ops', 'x-byte-write-ops', 'x-query-time', 'x-txn-retries']) {
        assert.ok(Number.isInteger(res.metrics[k]), `${k} = ${res.metrics[k]}`)
      }
    })

    it('client.ping answers', async () => {
      const c = server.adminClient()
      assert.equal(await c.ping('node'), 'Scope node is OK')
    })
  })

  // -------------------------------------------------------------------------
  describe('keys, roles and nested databases', () => {
    let parentAdmin
    let childAdmin
    let childServer
    let childClient
    let parentDoc
    let keys

    before(async () => {
      parentAdmin = await newDb('parent_db', 'admin')
      await parentAdmin.query(q.CreateCollection({ name: 'secret_stuff' }))
      parentDoc = await parentAdmin.query(
        q.Create(q.Collection('secret_stuff'), { data: { owner: 'parent' } })
      )
      await parentAdmin.query(q.CreateDatabase({ name: 'child_db' }))
      keys = {}
      for (const role of ['admin', 'server', 'client']) {
        keys[role] = await parentAdmin.query(
          q.CreateKey({ database: q.Database('child_db'), role })
        )
      }
      childAdmin = server.client(keys.admin.secret)
      childServer = server.client(keys.server.secret)
      childClient = server.client(keys.client.secret)
    })

    it('a key for a child database cannot see the parent', async () => {
      assert.equal(await childAdmin.query(q.Exists(q.Collection('secret_stuff'))), false)
      assert.deepEqual((await childAdmin.query(q.Paginate(q.Collections()))).data, [])
      assert.equal(await childAdmin.query(q.Exists(q.Database('child_db'))), false)
      assert.deepEqual((await childAdmin.query(q.Paginate(q.Databases()))).data, [])

      // Same name in the child is a different collection.
      await childAdmin.query(q.CreateCollection({ name: 'secret_stuff' }))
      await expectFaunaError(childAdmin.query(q.Get(parentDoc.ref)), 'NotFound', 'instance not found')
      await childServer.query(q.Create(q.Collection('secret_stuff'), { data: { owner: 'child' } }))
      await childServer.query(q.Create(q.Collection('secret_stuff'), { data: { owner: 'child' } }))
      assert.equal(await childServer.query(q.Count(q.Documents(q.Collection('secret_stuff')))), 2)
      assert.equal(await parentAdmin.query(q.Count(q.Documents(q.Collection('secret_stuff')))), 1)
      const parentSees = await parentAdmin.query(q.Get(parentDoc.ref))
      assert.equal(parentSees.data.owner, 'parent')
    })

    it('roles: server cannot manage databases; client cannot read or define schema', async () => {
      await expectFaunaError(
        childServer.query(q.CreateDatabase({ name: 'nope' })),
        'PermissionDenied',
        'permission denied'
      )
      const err = await expectFaunaError(
        childClient.query(q.Paginate(q.Databases())),
        'PermissionDenied',
        'permission denied'
      )
      assert.equal(err.requestResult.statusCode, 403)
      await expectFaunaError(
        childClient.query(q.CreateCollection({ name: 'nope' })),
        'PermissionDenied',
        'permission denied'
      )
      await childAdmin.query(
        q.CreateIndex({ name: 'all_secret_stuff', source: q.Collection('secret_stuff') })
      )
      // As in v4, Documents() is never refused: it hides what the key may not read.
      assert.deepEqual(
        (await childClient.query(q.Paginate(q.Documents(q.Collection('secret_stuff'))))).data,
        []
      )
      await expectFaunaError(
        childClient.query(q.Paginate(q.Match(q.Index('all_secret_stuff')))),
        'PermissionDenied',
        'permission denied'
      )
    })

    it('scoped root secrets and nested refs address nested databases', async () => {
      const root = server.rootKey
      const parentScoped = server.client(`${root}:parent_db:admin`)
      const childScoped = server.client(`${root}:parent_db/child_db:admin`)
      assert.equal(await parentScoped.query(q.Count(q.Documents(q.Collection('secret_stuff')))), 1)
      assert.equal(await childScoped.query(q.Count(q.Documents(q.Collection('secret_stuff')))), 2)

      const admin = server.adminClient()
      const nestedDb = q.Database('child_db', q.Database('parent_db'))
      assert.equal(await admin.query(q.Exists(q.Collection('secret_stuff', nestedDb))), true)
      const cols = await admin.query(q.Paginate(q.Collections(nestedDb)))
      assert.equal(cols.data.length, 1)
      const ref = cols.data[0]
      assert.equal(ref.id, 'secret_stuff')
      assert.equal(ref.collection.id, 'collections')
      assert.equal(ref.database.id, 'child_db')
      assert.equal(ref.database.database.id, 'parent_db')

      // A third level, created through the scoped secret.
      await childScoped.query(q.CreateDatabase({ name: 'grandchild_db' }))
      const deep = server.client(`${root}:parent_db/child_db/grandchild_db:server`)
      await deep.query(q.CreateCollection({ name: 'leaf' }))
      await deep.query(q.Create(q.Ref(q.Collection('leaf'), '1'), { data: { depth: 3 } }))
      const leaf = await admin.query(
        q.Get(q.Ref(q.Collection('leaf', q.Database('grandchild_db', nestedDb)), '1'))
      )
      assert.equal(leaf.data.depth, 3)
    })

    it('deleting a database revokes its keys', async () => {
      const key = await parentAdmin.query(
        q.CreateKey({ database: q.Database('child_db'), role: 'admin' })
      )
      const c = server.client(key.secret)
      assert.equal(await c.query(q.Exists(q.Collection('secret_stuff'))), true)
      await parentAdmin.query(q.Delete(q.Database('child_db')))
      await expectFaunaError(c.query(q.Exists(q.Collection('secret_stuff'))), 'Unauthorized', 'unauthorized')
      await expectFaunaError(childServer.query(1), 'Unauthorized', 'unauthorized')
      assert.equal(await parentAdmin.query(q.Exists(q.Database('child_db'))), false)
    })
  })

  // -------------------------------------------------------------------------
  describe('value round trips', () => {
    let c
    before(async () => {
      c = await newDb('values')
      await c.query(q.CreateCollection({ name: 'vals' }))
    })

    it('special types survive a write and a read', async () => {
      const target = await c.query(q.Create(q.Collection('vals'), { data: { target: true } }))
      const bytes = new values.Bytes(new Uint8Array([0xfb, 0xff, 0xfe, 0x00, 0x01, 0x7f]))
      const data = {
        bytes,
        date: new values.FaunaDate('2024-02-29'),
        time: new values.FaunaTime('2024-02-29T12:34:56.123456789Z'),
        ref: target.ref,
        coll: q.Collection('vals'),
        nested: { '@foo': { '@bar': [1, { '@baz': 'x' }] }, plain: { a: [1, 2, { b: 'c' }] } },
        long: 9007199254740991,
        neg: -42,
        dbl: 1.5,
        tiny: 1e-300,
        str: 'héllo 🐶 "quoted" \\ back\nslash\ttab \u0000 nul',
        t: true,
        f: false,
        emptyObj: {},
        emptyArr: [],
      }
      const doc = await c.query(q.Create(q.Collection('vals'), { data }))
      const got = (await c.query(q.Get(doc.ref))).data

      assert.ok(got.bytes instanceof values.Bytes, safeStringify(got.bytes))
      assert.deepEqual(Array.from(got.bytes.value), [0xfb, 0xff, 0xfe, 0x00, 0x01, 0x7f])
      assert.ok(got.date instanceof values.FaunaDate)
      assert.equal(got.date.value, '2024-02-29')
      assert.ok(got.time instanceof values.FaunaTime)
      assert.equal(got.time.value, '2024-02-29T12:34:56.123456789Z')
      assert.ok(got.ref instanceof values.Ref)
      assert.ok(got.ref.equals(target.ref))
      assert.equal(got.coll.id, 'vals')
      assert.equal(got.coll.collection.id, 'collections')
      assert.deepEqual(got.nested, data.nested)
      assert.equal(got.long, 9007199254740991)
      assert.equal(got.neg, -42)
      assert.equal(got.dbl, 1.5)
      assert.equal(got.tiny, 1e-300)
      assert.equal(got.str, data.str)
      assert.equal(got.t, true)
      assert.equal(got.f, false)
      assert.deepEqual(got.emptyObj, {})
      assert.deepEqual(got.emptyArr, [])
    })

    it('long vs double is preserved', async () => {
      const doc = await c.query(
        q.Create(q.Collection('vals'), { data: { i: 2, d: q.ToDouble(2), big: 9007199254740991 } })
      )
      const sel = f => q.Select(['data', f], q.Get(doc.ref))
      assert.equal(await c.query(q.IsInteger(sel('i'))), true)
      assert.equal(await c.query(q.IsDouble(sel('i'))), false)
      assert.equal(await c.query(q.IsDouble(sel('d'))), true)
      assert.equal(await c.query(q.IsInteger(sel('d'))), false)
      assert.equal(await c.query(q.Equals(sel('big'), 9007199254740991)), true)
      assert.equal(await c.query(q.Add(sel('big'), -9007199254740990)), 1)
      assert.equal(await c.query(q.IsDouble(q.Divide(q.ToDouble(1), 4))), true)
      assert.equal(await c.query(q.Divide(q.ToDouble(1), 4)), 0.25)
      assert.equal(await c.query(q.Divide(1.5, 0.5)), 3)
      assert.equal(await c.query(q.Divide(7, 2)), 3, 'integer division stays integral')
    })

    it('objects with @-keys are escaped on the wire', async () => {
      const res = await server.raw(JSON.stringify({ object: { '@ref': 'plain', '@ts': 5, x: 1 } }))
      assert.equal(res.status, 200, res.body)
      assert.deepEqual(JSON.parse(res.body).resource, {
        '@obj': { '@ref': 'plain', '@ts': 5, x: 1 },
      })
      const dbl = await server.raw(JSON.stringify({ to_double: 2 }))
      assert.equal(dbl.status, 200, dbl.body)
      assert.match(dbl.body, /"resource"\s*:\s*2\.0\b/, 'doubles keep a fraction on the wire')
    })

    it('null and arrays of mixed values echo back', async () => {
      assert.equal(await c.query(null), null)
      assert.deepEqual(await c.query([1, 'a', null, true, [2, { k: 'v' }]]), [
        1,
        'a',
        null,
        true,
        [2, { k: 'v' }],
      ])
    })
  })
})
