// A collection's documents (paged), and one document with its whole history: every
// version, when it was written, and which fields it changed.

import { run, parse, format, fql } from './api.js'
import { h, mount, field, card, table, errorLine, dbHref, isoTs, refresh, guarded } from './ui.js'

const PAGE_SIZES = [10, 20, 50, 100]
const CELL_CHARS_MAX = 240

function docRef(coll, id) {
  return { ref: fql.collection(coll), id }
}

function clip(s) {
  return s.length > CELL_CHARS_MAX ? s.slice(0, CELL_CHARS_MAX) + ' …' : s
}

export async function collectionView(path, coll) {
  const status = h('div', { role: 'status' })
  const list = h('div', {})
  const size = h('select', {}, PAGE_SIZES.map(n => h('option', { value: n, selected: n === 20 }, String(n))))
  const prev = h('button', { type: 'button', class: 'quiet', disabled: true }, 'Previous page')
  const next = h('button', { type: 'button', class: 'quiet', disabled: true }, 'Next page')
  const where = h('span', { class: 'muted' })
  let cursor = {} // {after} or {before} of the page on show
  let pageNo = 1

  const load = async move => {
    const opts = { size: Number(size.value), ...cursor }
    const page = await run(path, fql.pageOfDocs(fql.documents(fql.collection(coll)), opts))
    const texts = await format(page.data.map(d => d.data ?? { object: {} }))
    const rows = page.data.map((d, i) => {
      const id = d.ref['@ref'].id
      return [h('a', { href: dbHref(path, 'doc', coll, id), 'aria-label': `Document ${id}` }, id), h('td', { class: 'mono' }, isoTs(d.ts)), h('td', { class: 'mono' }, clip(texts[i]))]
    })
    mount(list, rows.length ? table(`Documents of ${coll}`, ['Id', 'Last written', 'Data'], rows) : h('p', { class: 'muted' }, 'No documents on this page.'))
    pageNo += move
    mount(where, `Page ${pageNo} · ${page.data.length} documents`)
    prev.disabled = !page.before
    next.disabled = !page.after
    prev.onclick = () => guarded(status, () => ((cursor = { before: page.before }), load(-1)))
    next.onclick = () => guarded(status, () => ((cursor = { after: page.after }), load(+1)))
  }
  size.addEventListener('change', () => guarded(status, () => ((cursor = {}), (pageNo = 1), load(0))))
  await load(0)

  const data = h('textarea', { rows: 4, spellcheck: 'false' })
  data.value = '{}'
  const id = h('input', { type: 'text', autocomplete: 'off', placeholder: 'a new id (optional)' })
  const form = h('form', { class: 'stack', 'aria-label': 'New document' }, field('New document data', data), field('Document id', id), h('div', {}, h('button', { type: 'submit' }, 'Create document')))
  form.addEventListener('submit', ev => {
    ev.preventDefault()
    guarded(status, async () => {
      const wire = await parse(data.value)
      const target = id.value.trim() ? docRef(coll, id.value.trim()) : fql.collection(coll)
      const doc = await run(path, { create: target, params: { object: { data: wire } } })
      mount(status, h('p', { class: 'ok' }, `Created document ${doc.ref['@ref'].id}.`))
      cursor = {}
      pageNo = 1
      await load(0)
    })
  })
  return [
    h('h1', {}, `Collection ${coll}`),
    h('p', {}, h('a', { href: dbHref(path) }, '← Database')),
    status,
    card('Documents', list, h('div', { class: 'pager' }, prev, next, field('Page size', size), where)),
    card('Create a document', form),
  ]
}

// ----- one document -----

const plain = v => v && typeof v === 'object' && !Array.isArray(v) && !Object.keys(v).some(k => k.startsWith('@'))

/** An update event carries only what the update set (null removes a field), merged into
 * objects the way Update merges; a create or replace carries the whole data. */
function applyEvent(prev, ev) {
  if (ev.action === 'delete') return null
  if (ev.action !== 'update' || !prev) return ev.data || {}
  const merge = (a, patch) => {
    const out = { ...a }
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete out[k]
      else if (plain(v) && plain(out[k])) out[k] = merge(out[k], v)
      else out[k] = v
    }
    return out
  }
  return merge(prev, ev.data || {})
}

/** The changes from one version's data to the next: [{field, kind, before, after}]. */
function changes(prevData, data, action) {
  const a = prevData || {}
  const b = action === 'delete' ? {} : data || {}
  const out = []
  for (const k of Object.keys(b)) {
    if (!(k in a)) out.push({ field: k, kind: 'added', after: b[k] })
    else if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) out.push({ field: k, kind: 'changed', before: a[k], after: b[k] })
  }
  for (const k of Object.keys(a)) if (!(k in b)) out.push({ field: k, kind: 'removed', before: a[k] })
  return out.sort((x, y) => (x.field < y.field ? -1 : 1))
}

export async function documentView(path, coll, id) {
  const ref = docRef(coll, id)
  const status = h('div', { role: 'status' })
  const [current, history] = await Promise.all([run(path, { if: { exists: ref }, then: { get: ref }, else: null }), historyOf(path, ref)])
  const [refText, currentText] = await format([{ '@ref': { id, collection: { '@ref': { id: coll, collection: { '@ref': { id: 'collections' } } } } } }, current ?? null])
  const version = h('div', { role: 'region', 'aria-label': 'Old version' })

  // Diff every version against the one before it; print all values in one request.
  const values = []
  const slot = v => (values.push(v === undefined ? null : v), values.length - 1)
  let prevData = null
  const planned = history.map(ev => {
    const data = applyEvent(prevData, ev)
    const cs = changes(prevData, data, ev.action).map(c => ({ ...c, b: c.kind !== 'added' ? slot(c.before) : -1, a: c.kind !== 'removed' ? slot(c.after) : -1 }))
    prevData = data
    return { ev, cs }
  })
  const texts = await format(values)
  const changeList = cs =>
    cs.length
      ? h(
          'ul',
          {},
          cs.map(c =>
            h(
              'li',
              { class: c.kind === 'added' ? 'change-add' : c.kind === 'removed' ? 'change-del' : '' },
              h('code', {}, c.field),
              c.kind === 'added' ? [' added: ', h('code', {}, texts[c.a])] : c.kind === 'removed' ? [' removed (was ', h('code', {}, texts[c.b]), ')'] : [': ', h('code', {}, texts[c.b]), ' → ', h('code', {}, texts[c.a])]
            )
          )
        )
      : h('span', { class: 'muted' }, 'no data changed')
  const rows = planned
    .slice()
    .reverse()
    .map(({ ev, cs }) => [
      h('td', { class: 'mono' }, isoTs(ev.ts)),
      ev.action,
      changeList(cs),
      h('button', { type: 'button', class: 'quiet', 'aria-label': `Show version at ${isoTs(ev.ts)}`, onclick: () => guarded(version, () => showVersion(path, ref, ev.ts, version)) }, 'Show'),
    ])

  const data = h('textarea', { rows: 4, spellcheck: 'false' })
  data.value = '{}'
  const form = h('form', { class: 'stack', 'aria-label': 'Update document' }, field('Update data', data), h('div', {}, h('button', { type: 'submit' }, 'Update document'), ' ', h('button', { type: 'button', class: 'danger', onclick: () => guarded(status, () => deleteDoc(path, ref)) }, 'Delete document')))
  form.addEventListener('submit', ev => {
    ev.preventDefault()
    guarded(status, async () => {
      await run(path, { update: ref, params: { object: { data: await parse(data.value) } } })
      refresh()
    })
  })

  return [
    h('h1', {}, `Document ${refText}`),
    h('p', {}, h('a', { href: dbHref(path, 'collection', coll) }, `← Collection ${coll}`)),
    status,
    card('Current version', current ? h('pre', { class: 'answer' }, currentText) : h('p', { class: 'muted' }, 'This document does not exist now (deleted, or never created).'), form),
    card(`History (${history.length} ${history.length === 1 ? 'version' : 'versions'})`, history.length ? table('Every version, newest first', ['Time', 'Action', 'What changed', 'Version'], rows) : h('p', { class: 'muted' }, 'No history.'), version),
  ]
}

/** Every event of the document, oldest first (pages of 100, at most 1,000 shown). */
async function historyOf(path, ref) {
  const out = []
  let after
  for (let i = 0; i < 10; i++) {
    const page = await run(path, { paginate: ref, events: true, size: 100, ...(after ? { after } : {}) })
    out.push(...page.data)
    if (!page.after) break
    after = page.after
  }
  return out
}

async function showVersion(path, ref, ts, where) {
  const v = await run(path, { at: ts, expr: { if: { exists: ref }, then: { get: ref }, else: null } })
  const [text] = await format([v])
  mount(where, h('h3', {}, `As of ${isoTs(ts)}`), h('pre', { class: 'answer' }, text))
}

async function deleteDoc(path, ref) {
  if (!confirm('Delete this document? Its history stays.')) return
  await run(path, { delete: ref })
  refresh()
}
