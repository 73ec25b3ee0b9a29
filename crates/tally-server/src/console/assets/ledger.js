// The ledger: the head and the newest blocks. Each block's hash is recomputed here, in
// the browser, from its header fields (SHA-256 over "tally.block.v2\0" and the 165-byte
// big-endian encoding, tally-ledger block.rs, docs/ledger.md), and each block's prev_hash is checked
// against the hash of the block below it. The signed tree head's member signatures are
// checked with WebCrypto's Ed25519, and a transaction's inclusion proof (/ledger/v1/) is
// checked against that head with WebCrypto's SHA-256 (RFC 9162 §2.1.3.2), all from
// docs/ledger.md: the page trusts the server for nothing it shows as verified.

import { ledger } from './api.js'
import { h, mount, card, table, field, errorLine, isoTs, guarded } from './ui.js'

const TAG = new TextEncoder().encode('tally.block.v2\0')
const HEADER_LEN = 165
const PAGE = 20

function hexBytes(hex) {
  const out = new Uint8Array(hex.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16)
  return out
}

function encodeHeader(hd) {
  const buf = new Uint8Array(HEADER_LEN)
  const dv = new DataView(buf.buffer)
  dv.setUint8(0, hd.version)
  dv.setBigUint64(1, BigInt(hd.height))
  buf.set(hexBytes(hd.prev_hash), 9)
  dv.setBigUint64(41, BigInt(hd.first_ts))
  dv.setBigUint64(49, BigInt(hd.last_ts))
  dv.setUint32(57, hd.txn_count)
  buf.set(hexBytes(hd.inputs_root), 61)
  buf.set(hexBytes(hd.effects_root), 93)
  dv.setBigUint64(125, BigInt(hd.tree_size))
  buf.set(hexBytes(hd.tree_root), 133)
  return buf
}

/** The header's hash as hex, or null where WebCrypto is missing (not a secure context). */
async function headerHash(hd) {
  if (!globalThis.crypto || !crypto.subtle) return null
  const bytes = new Uint8Array(TAG.length + HEADER_LEN)
  bytes.set(TAG, 0)
  bytes.set(encodeHeader(hd), TAG.length)
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))
  return Array.from(digest, b => b.toString(16).padStart(2, '0')).join('')
}

const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
const b64 = s => Uint8Array.from(atob(s), c => c.charCodeAt(0))
const toB64 = bytes => btoa(String.fromCharCode(...bytes))
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i])
const sha256 = async bytes => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))
const leafHash = leaf => sha256(concat(Uint8Array.of(0), leaf))
const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r))

/** RFC 9162 §2.1.3.2: does `path` lead from leaf `index` of a `size`-leaf tree to `root`? */
export async function verifyInclusion(hash, index, size, path, root) {
  let fn = BigInt(index)
  let sn = BigInt(size) - 1n
  if (fn > sn) return false
  let r = hash
  for (const p of path) {
    if (sn === 0n) return false
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r)
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n
        sn >>= 1n
      }
    } else {
      r = await nodeHash(r, p)
    }
    fn >>= 1n
    sn >>= 1n
  }
  return sn === 0n && equal(r, root)
}

/** The RFC 6962 TreeHeadSignature bytes a member signs (docs/ledger.md, "Signed tree heads"). */
function treeHeadBytes(sth) {
  const b = new Uint8Array(50)
  const dv = new DataView(b.buffer)
  b[1] = 1
  dv.setBigUint64(2, BigInt(sth.timestamp))
  dv.setBigUint64(10, BigInt(sth.tree_size))
  b.set(b64(sth.sha256_root_hash), 18)
  return b
}

/** How many of the head's signatures verify: {valid, total} or {unsupported: why}. */
async function checkSignatures(sth) {
  let valid = 0
  for (const s of sth.signatures) {
    const ds = b64(s.tree_head_signature)
    if (ds.length !== 68 || ds[0] !== 8 || ds[1] !== 7 || ds[2] !== 0 || ds[3] !== 64) continue
    let key
    try {
      key = await crypto.subtle.importKey('raw', b64(s.public_key), { name: 'Ed25519' }, false, ['verify'])
    } catch (e) {
      if (e && e.name === 'NotSupportedError') return { unsupported: 'this browser’s WebCrypto has no Ed25519, so the signatures were not checked' }
      continue
    }
    if (await crypto.subtle.verify({ name: 'Ed25519' }, key, ds.subarray(4), treeHeadBytes(sth))) valid += 1
  }
  return { valid, total: sth.signatures.length }
}

/**
 * Checks leaf `index` against the signed head `sth`: the entry's leaf commits to its
 * logged input (input hash), and the server's audit path leads from the leaf's hash to the
 * head's root. Returns the verdict as text; throws only when the server cannot be asked.
 */
async function checkLeaf(sth, index) {
  const { entries } = await ledger(`/ledger/v1/get-entries?start=${index}&end=${index}`)
  const entry = entries[0]
  const leaf = b64(entry.leaf_input)
  if (leaf.length !== 89 || leaf[0] !== 1) return { ok: false, text: `failed: leaf ${index} is not a version-1 leaf` }
  if (!equal(await leafHash(b64(entry.extra_data)), leaf.subarray(21, 53))) {
    return { ok: false, text: `failed: leaf ${index} does not commit to the transaction served with it` }
  }
  const hash = await leafHash(leaf)
  const proof = await ledger(`/ledger/v1/get-proof-by-hash?hash=${encodeURIComponent(toB64(hash))}&tree_size=${sth.tree_size}`)
  const path = proof.audit_path.map(b64)
  if (proof.leaf_index !== index) return { ok: false, text: `failed: the server proved leaf ${proof.leaf_index}, not ${index}` }
  if (!(await verifyInclusion(hash, index, sth.tree_size, path, b64(sth.sha256_root_hash)))) {
    return { ok: false, text: `failed: the audit path does not lead from leaf ${index} to the head’s root` }
  }
  const ts = new DataView(leaf.buffer, leaf.byteOffset).getBigUint64(1)
  return { ok: true, text: `verified: transaction ${index} (committed ${isoTs(Number(ts))}) is in the tree of ${sth.tree_size} transactions, through ${path.length} hashes` }
}

/** The signed head and a proof checked in this browser. */
async function proofCard() {
  if (!globalThis.crypto || !crypto.subtle) {
    return card('Signed head and proofs', h('p', { class: 'muted' }, 'Not checked: WebCrypto needs a secure context (https, or http on localhost).'))
  }
  const sth = await ledger('/ledger/v1/get-sth')
  const sigs = await checkSignatures(sth)
  const members = sth.members || sth.signatures.length
  const sigText = sigs.unsupported
    ? `not checked: ${sigs.unsupported}`
    : sigs.valid === sigs.total && sigs.valid * 2 > members
      ? `verified: ${sigs.valid} of ${members} member signature(s), a majority (Ed25519, checked in this browser)`
      : `failed: ${sigs.valid} of ${sigs.total} signature(s) verify, ${members} member(s)`
  const sigOk = !sigs.unsupported && sigs.valid === sigs.total && sigs.valid * 2 > members
  const result = h('p', { role: 'status', 'aria-label': 'Proof result' })
  const index = h('input', { type: 'number', min: 0, max: Math.max(0, sth.tree_size - 1), value: String(Math.max(0, sth.tree_size - 1)) })
  const check = async () => {
    const i = Number(index.value)
    if (!Number.isInteger(i) || i < 0 || i >= sth.tree_size) {
      mount(result, h('span', { class: 'error' }, `Give a transaction number from 0 to ${sth.tree_size - 1}.`))
      return
    }
    mount(result, 'checking…')
    await guarded(result, async () => {
      const v = await checkLeaf(sth, i)
      mount(result, h('span', { class: v.ok ? 'ok' : 'error' }, v.text))
    })
  }
  const form = h(
    'form',
    { onsubmit: e => { e.preventDefault(); check() } },
    field('Transaction number', index),
    h('button', { type: 'submit' }, 'Check proof')
  )
  if (sth.tree_size > 0) check()
  return card(
    'Signed head and proofs',
    h(
      'dl',
      {},
      h('dt', {}, 'Tree size'),
      h('dd', { 'aria-label': 'Tree size' }, String(sth.tree_size)),
      h('dt', {}, 'Root'),
      h('dd', { class: 'mono' }, sth.sha256_root_hash),
      h('dt', {}, 'Signatures'),
      h('dd', { 'aria-label': 'Signatures', class: sigOk ? 'ok' : sigs.unsupported ? 'muted' : 'error' }, sigText)
    ),
    sth.tree_size > 0 ? [form, result] : h('p', { class: 'muted' }, 'No transaction yet.')
  )
}

export async function ledgerView() {
  let first
  try {
    first = await ledger(`/ledger/blocks?limit=${PAGE}`)
  } catch (e) {
    return [h('h1', {}, 'Ledger'), errorLine(e), h('p', { class: 'muted' }, 'The ledger moves with every tenant’s writes: sign in with the root key or an admin key of the root database to see it.')]
  }
  const blocks = []
  const list = h('div', {})
  const status = h('div', { role: 'status' })
  const older = h('button', { type: 'button', class: 'quiet' }, 'Older blocks')
  const render = async () => {
    const rows = []
    for (let i = 0; i < blocks.length; i++) {
      const b = blocks[i]
      const computed = await headerHash(b.header)
      const below = blocks[i + 1]
      const linkOk = !below || below.hash === b.header.prev_hash
      const hashOk = computed === null ? null : computed === b.hash
      const verdict = hashOk === null ? 'not checked (needs a secure context)' : hashOk && linkOk ? 'verified' : hashOk ? 'prev_hash does not match the block below' : 'hash does not match the header'
      rows.push([
        String(b.height),
        h('td', { class: 'mono' }, b.header.first_ts === b.header.last_ts ? isoTs(b.header.first_ts) : `${isoTs(b.header.first_ts)} … ${isoTs(b.header.last_ts)}`),
        String(b.header.txn_count),
        h('td', { class: 'mono', title: b.hash }, b.hash.slice(0, 16) + '…'),
        h('td', { class: 'mono', title: b.header.prev_hash }, b.header.prev_hash.slice(0, 16) + '…'),
        h('td', { class: hashOk && linkOk ? 'ok' : hashOk === null ? 'muted' : 'error' }, verdict),
      ])
    }
    mount(list, table('Newest first; hashes recomputed in this browser', ['Height', 'Commit time', 'Transactions', 'Hash', 'Previous hash', 'Check'], rows))
    const lowest = blocks.length ? blocks[blocks.length - 1].height : 0
    older.disabled = lowest <= 1
    older.onclick = () =>
      guarded(status, async () => {
        const page = await ledger(`/ledger/blocks?before=${lowest}&limit=${PAGE}`)
        blocks.push(...page.blocks)
        await render()
      })
  }
  blocks.push(...first.blocks)
  await render()
  const head = first.head
  const proofs = h('div', {})
  guarded(proofs, async () => mount(proofs, await proofCard()))
  return [
    h('h1', {}, 'Ledger'),
    proofs,
    card('Head', head ? h('dl', {}, h('dt', {}, 'Height'), h('dd', { 'aria-label': 'Head height' }, String(head.height)), h('dt', {}, 'Hash'), h('dd', { class: 'mono' }, head.hash)) : h('p', { class: 'muted' }, 'No block yet.')),
    card('Recent blocks', list, h('div', { class: 'pager' }, older), status),
  ]
}
