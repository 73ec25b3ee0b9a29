// Talking to Tally from the console: the secret (session storage only, sent only in the
// Authorization header), FQL wire JSON built from plain values, and the console's text
// endpoints (parse, format, query) that use the JavaScript driver's syntax.

const SECRET = 'tally.console.secret'

export const session = {
  get secret() {
    return sessionStorage.getItem(SECRET)
  },
  set(secret) {
    sessionStorage.setItem(SECRET, secret)
  },
  clear() {
    sessionStorage.removeItem(SECRET)
  },
}

/** The secret acting as admin in database `path` ('' = the secret's own database). */
export function secretFor(path) {
  const s = session.secret
  return path ? `${s}:${path}:admin` : s
}

export class FqlError extends Error {
  constructor(status, err) {
    super(`${err.code}: ${err.description}`)
    this.status = status
    this.code = err.code
    this.description = err.description
    this.line = err.line
    this.column = err.column
  }
}

async function post(url, body, secret) {
  const headers = { 'content-type': 'application/json', 'x-faunadb-api-version': '4' }
  if (secret) headers.authorization = `Bearer ${secret}`
  const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), credentials: 'omit' })
  let json
  try {
    json = await res.json()
  } catch {
    throw new FqlError(res.status, { code: 'bad response', description: `HTTP ${res.status} without a JSON body` })
  }
  if (json.errors && json.errors.length) throw new FqlError(res.status, json.errors[0])
  return { json, headers: res.headers }
}

/** Run wire JSON `expr` in database `path`; the answer's resource (wire JSON). */
export async function run(path, expr) {
  const { json } = await post('/', expr, secretFor(path))
  return json.resource
}

/** Run FQL text in database `path`: {resource, text, query, txnTime, queryTime}. */
export async function runText(path, fql) {
  const { json, headers } = await post('/console/query', { fql }, secretFor(path))
  return { ...json, txnTime: headers.get('x-txn-time'), queryTime: headers.get('x-query-time') }
}

/** FQL text → wire JSON (errors carry line and column). */
export async function parse(fql) {
  return (await post('/console/parse', { fql })).json.wire
}

/** Wire values → their text in the driver's syntax. */
export async function format(values) {
  if (!values.length) return []
  return (await post('/console/format', { values })).json.texts
}

/** GET a ledger endpoint with the signed-in secret. */
export async function ledger(pathAndQuery) {
  const res = await fetch(pathAndQuery, { headers: { authorization: `Bearer ${session.secret}` }, credentials: 'omit' })
  const json = await res.json()
  if (json.errors && json.errors.length) throw new FqlError(res.status, json.errors[0])
  return json
}

// ----- wire JSON -----

/** A plain value as an FQL literal: objects wrapped in {object: …}; wire values
 * (`{"@ref": …}` and the like) kept as they are. */
export function lit(v) {
  if (Array.isArray(v)) return v.map(lit)
  if (v && typeof v === 'object') {
    const keys = Object.keys(v)
    if (keys.length === 1 && keys[0].startsWith('@')) return v
    return { object: Object.fromEntries(keys.map(k => [k, lit(v[k])])) }
  }
  return v
}

export const fql = {
  collection: name => ({ collection: name }),
  index: name => ({ index: name }),
  fn: name => ({ function: name }),
  role: name => ({ role: name }),
  database: name => ({ database: name }),
  /** Map(Paginate(set, opts), Lambda("r", Get(Var("r")))) */
  pageOfDocs: (set, opts = {}) => ({
    map: { lambda: 'r', expr: { get: { var: 'r' } } },
    collection: { paginate: set, ...opts },
  }),
  paginate: (set, opts = {}) => ({ paginate: set, ...opts }),
  documents: coll => ({ documents: coll }),
  create: (coll, params) => ({ create: coll, params: lit(params) }),
  update: (ref, params) => ({ update: ref, params: lit(params) }),
  remove: ref => ({ delete: ref }),
  get: ref => ({ get: ref }),
}

/** Schema listings: Map(Paginate(Collections()), Lambda("r", Get(Var("r")))) and the like. */
export function listSchema(kind, size = 1000) {
  return fql.pageOfDocs({ [kind]: null }, { size })
}

/** The id and the collection of a wire ref. */
export function refParts(ref) {
  const r = ref && ref['@ref']
  if (!r) return null
  const coll = r.collection && r.collection['@ref']
  return { id: r.id, collection: coll ? coll.id : null, native: !coll || !coll.collection }
}
