'use strict'
// Shared by the backup tests: running the `tally` CLI against a node, its ledger head,
// and every document of the `acct` collection (optionally at a ts).

const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const { rawRequest, q } = require('./server')

/** Run `tally ARGS` with the node at `endpoint` and its root key in the environment. */
function tallyCli(bin, rootKey, endpoint, args) {
  return spawnSync(bin, args, {
    encoding: 'utf8',
    env: { ...process.env, TALLY_ROOT_KEY: rootKey, TALLY_ENDPOINT: endpoint },
    timeout: 120_000,
  })
}

async function head(server) {
  const r = await rawRequest(server.port, { method: 'GET', path: '/ledger/head', headers: { authorization: `Bearer ${server.rootKey}` } })
  assert.equal(r.status, 200)
  return JSON.parse(r.body.toString('utf8'))
}

async function allDocs(c, ts) {
  const set = q.Map(q.Paginate(q.Documents(q.Collection('acct')), { size: 10000 }), q.Lambda('r', q.Get(q.Var('r'))))
  const page = await c.query(ts === undefined ? set : q.At(ts, set))
  return page.data.map(d => ({ id: d.ref.id, ts: d.ts, data: d.data }))
}

module.exports = { tallyCli, head, allDocs }
