// A database's page: its collections, indexes, functions, roles, keys and child
// databases, each listed with a form to create one and a button to delete each.

import { run, parse, format, listSchema, fql } from './api.js'
import { h, mount, field, card, table, errorLine, describe, dbHref, queryHref, refresh, guarded } from './ui.js'

const KINDS = ['collections', 'indexes', 'functions', 'roles', 'keys', 'databases']
const BUILTIN_ROLES = ['admin', 'server', 'server-readonly', 'client']

export async function databaseView(path) {
  const listed = await Promise.allSettled(KINDS.map(k => run(path, listSchema(k))))
  const lists = Object.fromEntries(KINDS.map((k, i) => [k, listed[i].status === 'fulfilled' ? listed[i].value.data : listed[i].reason]))
  // One round trip prints every structured cell (index terms, roles, privileges, …).
  const cells = []
  const printed = v => {
    cells.push(v === undefined ? null : v)
    return cells.length - 1
  }
  const plans = {
    indexes: ok(lists.indexes).map(i => [printed(i.source), printed(i.terms ?? null), printed(i.values ?? null)]),
    functions: ok(lists.functions).map(f => printed(f.role ?? null)),
    roles: ok(lists.roles).map(r => [printed(r.privileges ?? []), printed(r.membership ?? null)]),
    keys: ok(lists.keys).map(k => [printed(k.role), printed(k.database ?? null)]),
  }
  const texts = await format(cells).catch(() => cells.map(c => JSON.stringify(c)))
  const t = i => texts[i]
  const status = h('div', { role: 'status' })
  const ctx = { path, lists, status }
  const title = path ? `Database ${path}` : 'This database'
  return [
    h('h1', {}, title),
    h('p', {}, h('a', { href: queryHref(path) }, 'Query this database'), path ? ' · runs as admin through a scoped secret' : ''),
    status,
    h(
      'div',
      { class: 'grid2' },
      collectionsCard(ctx),
      indexesCard(ctx, plans.indexes, t),
      functionsCard(ctx, plans.functions, t),
      rolesCard(ctx, plans.roles, t),
      keysCard(ctx, plans.keys, t),
      databasesCard(ctx)
    ),
  ]
}

function ok(list) {
  return Array.isArray(list) ? list : []
}

/** The listing, or why it could not be read (a key may not see keys or databases). */
function listed(list, render) {
  if (!Array.isArray(list)) return h('p', { class: 'muted' }, `Cannot list: ${describe(list)}`)
  if (!list.length) return h('p', { class: 'muted' }, 'None yet.')
  return render(list)
}

function deleteButton(ctx, what, name, ref) {
  return h('button', {
    type: 'button',
    class: 'danger',
    'aria-label': `Delete ${what} ${name}`,
    text: 'Delete',
    onclick: () =>
      guarded(ctx.status, async () => {
        if (!confirm(`Delete ${what} ${name}? This cannot be undone.`)) return
        await run(ctx.path, fql.remove(ref))
        if (what === 'database') window.dispatchEvent(new Event('tally:databases'))
        refresh()
      }),
  })
}

/** A create form: fields, a submit button, and what to run on submit. */
function createForm(ctx, label, button, fields, make) {
  const out = h('div', { role: 'status' })
  const form = h('form', { class: 'inline', 'aria-label': label }, fields, h('button', { type: 'submit' }, button), out)
  form.addEventListener('submit', ev => {
    ev.preventDefault()
    guarded(out, async () => {
      const shown = await make()
      if (shown instanceof Node) mount(out, shown)
      else refresh()
    })
  })
  return form
}

/** FQL text of a field, as wire JSON (or `fallback` when the field is empty). */
async function fqlField(input, fallback) {
  const text = input.value.trim()
  return text ? parse(text) : fallback
}

function input(attrs = {}) {
  return h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', ...attrs })
}

function collectionsCard(ctx) {
  const name = input({ required: true })
  const rows = list =>
    table(
      'Collections',
      ['Name', 'Documents', ''],
      list.map(c => [
        h('a', { href: dbHref(ctx.path, 'collection', c.name) }, c.name),
        h('a', { href: dbHref(ctx.path, 'collection', c.name) }, 'Browse'),
        deleteButton(ctx, 'collection', c.name, c.ref),
      ])
    )
  return card(
    'Collections',
    listed(ctx.lists.collections, rows),
    createForm(ctx, 'New collection', 'Create collection', [field('New collection name', name)], () =>
      run(ctx.path, { create_collection: { object: { name: name.value.trim() } } })
    )
  )
}

function indexesCard(ctx, plan, t) {
  const name = input({ required: true })
  const source = h('select', {}, ok(ctx.lists.collections).map(c => h('option', { value: c.name }, c.name)))
  const terms = input({ placeholder: '[{field: ["data", "name"]}]' })
  const values = input({ placeholder: '[{field: ["data", "age"]}]' })
  const unique = h('input', { type: 'checkbox' })
  const rows = list =>
    table(
      'Indexes',
      ['Name', 'Source', 'Terms', 'Values', ''],
      list.map((i, n) => [i.name, h('code', {}, t(plan[n][0])), h('code', {}, t(plan[n][1])), h('code', {}, t(plan[n][2])), deleteButton(ctx, 'index', i.name, i.ref)])
    )
  return card(
    'Indexes',
    listed(ctx.lists.indexes, rows),
    createForm(
      ctx,
      'New index',
      'Create index',
      [field('New index name', name), field('Source collection', source), field('Terms (FQL)', terms), field('Values (FQL)', values), field('Unique', unique)],
      async () => {
        const p = { name: name.value.trim(), source: fql.collection(source.value), unique: unique.checked }
        const tw = await fqlField(terms, null)
        const vw = await fqlField(values, null)
        if (tw !== null) p.terms = tw
        if (vw !== null) p.values = vw
        await run(ctx.path, { create_index: { object: p } })
      }
    )
  )
}

function roleChoices(ctx, withNone) {
  const user = ok(ctx.lists.roles).map(r => h('option', { value: '@' + r.name }, `Role("${r.name}")`))
  return [withNone ? h('option', { value: '' }, '(none)') : null, BUILTIN_ROLES.map(r => h('option', { value: r }, r)), user]
}

function roleValue(v) {
  return v.startsWith('@') ? fql.role(v.slice(1)) : v
}

function functionsCard(ctx, plan, t) {
  const name = input({ required: true })
  const body = h('textarea', { rows: 3, spellcheck: 'false' })
  body.value = 'Query(Lambda("x", Var("x")))'
  const role = h('select', {}, roleChoices(ctx, true))
  const rows = list => table('Functions', ['Name', 'Role', ''], list.map((f, n) => [f.name, h('code', {}, t(plan[n])), deleteButton(ctx, 'function', f.name, f.ref)]))
  return card(
    'Functions',
    listed(ctx.lists.functions, rows),
    createForm(ctx, 'New function', 'Create function', [field('New function name', name), field('Function body (FQL)', body), field('Function role', role)], async () => {
      const p = { name: name.value.trim(), body: await parse(body.value) }
      if (role.value) p.role = roleValue(role.value)
      await run(ctx.path, { create_function: { object: p } })
    })
  )
}

function rolesCard(ctx, plan, t) {
  const name = input({ required: true })
  const privileges = h('textarea', { rows: 3, spellcheck: 'false' })
  privileges.value = '[]'
  const membership = input({ placeholder: '[{resource: Collection("users")}]' })
  const rows = list =>
    table('Roles', ['Name', 'Privileges', 'Membership', ''], list.map((r, n) => [r.name, h('pre', {}, t(plan[n][0])), h('code', {}, t(plan[n][1])), deleteButton(ctx, 'role', r.name, r.ref)]))
  return card(
    'Roles',
    listed(ctx.lists.roles, rows),
    createForm(ctx, 'New role', 'Create role', [field('New role name', name), field('Privileges (FQL)', privileges), field('Membership (FQL)', membership)], async () => {
      const p = { name: name.value.trim(), privileges: await fqlField(privileges, []) }
      const m = await fqlField(membership, null)
      if (m !== null) p.membership = m
      await run(ctx.path, { create_role: { object: p } })
    })
  )
}

function keysCard(ctx, plan, t) {
  const role = h('select', {}, roleChoices(ctx, false))
  const name = input({})
  const rows = list =>
    table(
      'Keys',
      ['Id', 'Name', 'Role', 'Database', ''],
      list.map((k, n) => {
        const id = k.ref['@ref'].id
        return [h('code', {}, id), k.data?.name ?? '', h('code', {}, t(plan[n][0])), h('code', {}, t(plan[n][1])), deleteButton(ctx, 'key', k.data?.name || id, k.ref)]
      })
    )
  return card(
    'Keys',
    listed(ctx.lists.keys, rows),
    createForm(ctx, 'New key', 'Create key', [field('Role of the new key', role), field('Key name', name)], async () => {
      const p = { role: roleValue(role.value) }
      if (name.value.trim()) p.data = { object: { name: name.value.trim() } }
      const key = await run(ctx.path, { create_key: { object: p } })
      return h(
        'div',
        { class: 'once' },
        h('p', {}, h('strong', {}, 'Key created. Its secret is shown once; copy it now.')),
        h('output', { 'aria-label': 'New key secret', class: 'mono secret' }, key.secret),
        h('p', { class: 'small muted' }, 'Done hides the secret and lists the new key.'),
        h('button', { type: 'button', class: 'quiet', onclick: refresh }, 'Done')
      )
    })
  )
}

function databasesCard(ctx) {
  const name = input({ required: true })
  const child = n => (ctx.path ? `${ctx.path}/${n}` : n)
  const rows = list => table('Child databases', ['Name', ''], list.map(d => [h('a', { href: dbHref(child(d.name)) }, d.name), deleteButton(ctx, 'database', d.name, d.ref)]))
  return card(
    'Child databases',
    listed(ctx.lists.databases, rows),
    createForm(ctx, 'New database', 'Create database', [field('New database name', name)], async () => {
      await run(ctx.path, { create_database: { object: { name: name.value.trim() } } })
      window.dispatchEvent(new Event('tally:databases'))
    })
  )
}
