'use strict'
// FQL text (tally-fqltext, through the hidden `tally fql-to-json --batch`) against the
// official driver: every text below is also run as JavaScript with the driver's `q` in
// scope, and Tally's translation must be exactly what `JSON.stringify(q.X(...))` gives —
// same values, same key order — or, where the driver throws, an error from Tally too.
// Every function the driver exports is called with 0 to 5 arguments drawn from a pool of
// literals, calls and arrow functions.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const path = require('node:path')

const { q } = require('./helpers/server')

const BIN = process.env.TALLY_BIN
  ? path.resolve(__dirname, '..', '..', process.env.TALLY_BIN)
  : path.join(__dirname, '..', '..', 'target', 'release', 'tally')

/** Tally's translation of each text: {wire} or {error: {line, column, message}}. */
function tallyBatch(texts) {
  const r = spawnSync(BIN, ['fql-to-json', '--batch'], {
    input: JSON.stringify(texts),
    maxBuffer: 256 << 20,
    encoding: 'utf8',
  })
  assert.equal(r.status, 0, `tally fql-to-json failed: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/** The driver's serialization of the same text run as JavaScript, or the error it throws. */
function driver(text) {
  // `with (q)` puts Map, Date, Object, Function … of the driver in scope, as in fauna-shell.
  const run = new Function('q', `with (q) { return (${text}\n) }`)
  try {
    // Client.query sends q.wrap(expression): a top-level object literal is wrapped too.
    return { json: JSON.stringify(q.wrap(run(q))) }
  } catch (e) {
    return { threw: String(e && e.message).split('\n')[0] }
  }
}

// Where Tally deliberately refuses what the driver accepts. The driver ignores arguments
// past its declared ones for these (min-only arity checks); Tally says there are too many.
const IGNORED_EXTRA_ARGS = { Casefold: 2, Concat: 2, Round: 2, Trunc: 2, Hypot: 2, Pow: 2 }
// The driver builds nonsense from a wrong shape here (Object.keys of a number or of an
// Expr: `Let(1, x)` sends `{let: [], …}`, `Paginate(s, Var("v"))` sends a `raw` field);
// Tally asks for the shape the function takes.
const SHAPE_CHECKED = {
  Let: /Let takes its bindings as an object|Let's bindings in an array are objects/,
  Paginate: /Paginate's options are an object/,
  Object: /Object takes an object literal/,
}

const POOL = [
  '"s"',
  '1',
  '2.5',
  '-3',
  'null',
  'true',
  '[1, "a"]',
  '{a: 1, b: [2, {c: "d"}]}',
  'Var("v")',
  'Add(1, 2)',
  'x => Add(x, 1)',
  '(a, b) => [b, a]',
  'Ref(Collection("c"), "1")',
  '{2: "two", z: 1, 1: "one"}',
  'Lambda("y", Var("y"))',
]

function exported() {
  return Object.keys(q).filter(k => k !== 'arity' && k !== 'wrap')
}

function generated() {
  const texts = []
  exported().forEach((name, fi) => {
    for (let n = 0; n <= 5; n++) {
      for (let variant = 0; variant < 3; variant++) {
        const args = []
        for (let i = 0; i < n; i++) args.push(POOL[(fi * 7 + variant * 5 + i * 3 + n) % POOL.length])
        const prefix = variant === 2 ? 'q.' : ''
        texts.push({ name, n, text: `${prefix}${name}(${args.join(', ')})` })
      }
    }
  })
  return texts
}

// Syntax beyond plain calls: literals, comments, quoting, arrows, key order.
const HANDWRITTEN = [
  'Paginate(Documents(Collection("players")), {size: 10})',
  'Let({a: 1}, Add(Var("a"), 2))',
  'Let({a: 1, b: 2}, (a, b) => Add(a, b))',
  'Let({first: 1, second: 2}, (x, y) => [y, x])',
  'Let([{a: 1}, {b: Var("a")}], (a, b) => b)',
  'Map([1, 2], function (x) { return Multiply(x, 2) })',
  'Map([1, 2], x => { return Multiply(x, 2); })',
  'Map([[1, 2]], x => y => [x, y])',
  'Filter([1], x => ({x, y: [x]}))',
  'Reduce((acc, v) => Add(acc, v), 0, [1, 2, 3])',
  'Query(x => x)',
  'Lambda(x => Var("x"))',
  'Lambda(["a", "b"], Var("a"))',
  'Lambda(Add(1, 2))',
  "Concat(['it\\'s', \"a \\\"b\\\"\", `c`], '\\n\\t\\u00e9\\x41\\u{1F600}')",
  'Add(0x1F, 0o17, 0b101, 1_000, 1e3, 2.5e-3, .5, -0.25, +4)',
  'Add(1.0, 2.50, 1e21, 123456789012345)',
  '{b: 1, 10: "x", a: 2, 2: "y", b: 3}',
  '{"quoted": 1, \'single\': 2, $dollar: 3, _under: 4, in: 5, default: 6}',
  '[1, [2, [3, {}]], [],]',
  'Do(Add(1, 2), /* a comment */ Now(), // another\n NewId(),)',
  'q.If(q.Equals(1, 1), "yes", "no")',
  '(Add((1), (2)))',
  'Select(["a", 0], {a: [1]}, null)',
  'Select("a", {a: 1})',
  'Get(Ref(Collection("c"), "1"), null)',
  'Create(Collection("c"), null)',
  'Collection("c", null)',
  'Role("r", null)',
  'FindStrRegex("abc", "b", null, 2)',
  'Match(Index("i"))',
  'Match(Index("i"), [])',
  'Call(Function("f"))',
  'Call(Function("f"), [1, 2])',
  'Format("%s %d", "a", 1)',
  'Bytes("AQID")',
  'Bytes("-_8=")',
  'Bytes("")',
  'Ref("collections/c")',
  'Paginate(Collections(), null)',
  'Paginate(Match(Index("i")), {size: 2, after: [Ref(Collection("c"), "1")], events: true, sources: true})',
  'Object({a: {b: 1}})',
  'CreateIndex({name: "i", source: Collection("c"), terms: [{field: ["data", "x"]}], values: [{field: ["ref"]}]})',
  // errors the driver throws as JavaScript too
  'Add()',
  'Now(1)',
  'Nope(1)',
  'Add(1, undefinedName)',
  'Lambda("x")',
  'Map([], () => 1)',
  'Bytes("abc")',
  'Bytes(1)',
  'Time(1, 2, 3)',
]

function compare(text, ours, theirs) {
  if (theirs.threw !== undefined) {
    assert.ok(ours.error, `${text}: the driver throws (${theirs.threw}) but Tally translated it to ${JSON.stringify(ours.wire)}`)
    return 'both refused'
  }
  if (ours.error) return { refused: ours.error.message }
  // JSON.parse + stringify normalizes number spelling (1e21 vs 1e+21) and keeps key order.
  assert.equal(JSON.stringify(ours.wire), JSON.stringify(JSON.parse(theirs.json)), text)
  return 'equal'
}

describe('FQL text against the driver', () => {
  it('every exported function, 0 to 5 arguments', () => {
    const cases = generated()
    const results = tallyBatch(cases.map(c => c.text))
    const tally = { equal: 0, 'both refused': 0, deviations: 0 }
    const seenEqual = new Set()
    cases.forEach((c, i) => {
      const out = compare(c.text, results[i], driver(c.text))
      if (typeof out === 'string') {
        tally[out]++
        if (out === 'equal') seenEqual.add(c.name)
        return
      }
      const extra = IGNORED_EXTRA_ARGS[c.name]
      const shape = SHAPE_CHECKED[c.name]
      const allowed = (extra !== undefined && c.n > extra && /takes .* arguments?, not/.test(out.refused)) ||
        (shape !== undefined && shape.test(out.refused))
      assert.ok(allowed, `${c.text}: the driver accepts it, Tally refused: ${out.refused}`)
      tally.deviations++
    })
    // Every exported function was translated identically at least once (Let and Bytes
    // need argument shapes the pool rarely lines up; the handwritten texts have them).
    const hand = tallyBatch(HANDWRITTEN)
    HANDWRITTEN.forEach((text, i) => {
      const name = /^(?:q\.)?([A-Za-z]+)\(/.exec(text)
      if (name && compare(text, hand[i], driver(text)) === 'equal') seenEqual.add(name[1])
    })
    assert.deepEqual(exported().filter(n => !seenEqual.has(n)), [])
    console.log(`fqltext cross-check: ${cases.length} texts, ${JSON.stringify(tally)}`)
  })

  it('literals, comments, arrows, key order and errors', () => {
    const results = tallyBatch(HANDWRITTEN)
    HANDWRITTEN.forEach((text, i) => {
      const out = compare(text, results[i], driver(text))
      assert.ok(typeof out === 'string', `${text}: Tally refused what the driver accepts: ${out.refused}`)
    })
  })

  it('errors name the line and column', () => {
    const [unknown, arity] = tallyBatch(['Paginate(\n  Collections(),\n  Foo(1))', 'Let({a: 1},\n   Add())'])
    assert.deepEqual([unknown.error.line, unknown.error.column], [3, 3])
    assert.match(unknown.error.message, /unknown function Foo/)
    assert.deepEqual([arity.error.line, arity.error.column], [2, 4])
    assert.match(arity.error.message, /Add takes at least 1 arguments, not 0/)
  })
})
