// The console: sign in, the database tree, and the hash router that picks a view.
//   #/db/<path>                         a database: its schema (schema.js)
//   #/db/<path>/@collection/<name>      a collection's documents (docs.js)
//   #/db/<path>/@doc/<collection>/<id>  a document and its history (docs.js)
//   #/query/<path>                      the query console
//   #/ledger                            the ledger (ledger.js)
// <path> is a database path below the secret's own database ('' for that one), each
// part URI-encoded ('@' too), joined with '/'; a part starting with '@' names the page.

import { session, run, runText, listSchema } from './api.js'
import { h, mount, field, card, errorLine, describe, dbHref } from './ui.js'
import { databaseView } from './schema.js'
import { collectionView, documentView } from './docs.js'
import { ledgerView } from './ledger.js'

const main = document.getElementById('main')
const tree = document.getElementById('tree')
const topnav = document.getElementById('topnav')

function parseHash() {
  // Split before decoding: an encoded part never holds a literal '/' or '@'.
  const raw = location.hash.replace(/^#\/?/, '').split('/')
  const [view, ...rest] = raw
  if (view === 'ledger') return { view: 'ledger' }
  const kw = rest.findIndex(p => p.startsWith('@'))
  const path = (kw < 0 ? rest : rest.slice(0, kw)).filter(Boolean).map(decodeURIComponent).join('/')
  if (view === 'query') return { view: 'query', path }
  if (kw < 0) return { view: 'db', path }
  return { view: rest[kw].slice(1), path, args: rest.slice(kw + 1).map(decodeURIComponent) }
}

function signInView(message) {
  const secret = h('input', { type: 'password', id: 'secret', name: 'secret', autocomplete: 'off', required: true })
  const status = h('div', { role: 'status' }, message ? errorLine({ message }) : null)
  const form = h(
    'form',
    { class: 'stack', 'aria-label': 'Sign in' },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Use a key’s secret (the root key shows every database). It stays in this tab only.'),
    field('Secret', secret),
    h('div', {}, h('button', { type: 'submit' }, 'Sign in')),
    status
  )
  form.addEventListener('submit', async ev => {
    ev.preventDefault()
    session.set(secret.value.trim())
    try {
      await run('', true) // any query authenticates the secret
      secret.value = ''
      if (!location.hash || location.hash === '#/' || location.hash === '#') location.hash = '#/db/'
      start()
    } catch (e) {
      session.clear()
      mount(status, errorLine(e.status === 401 ? { message: 'That secret was refused (unauthorized).' } : e))
    }
  })
  tree.hidden = true
  topnav.hidden = true
  mount(main, h('div', { class: 'signin' }, form))
  secret.focus()
}

// ----- the database tree -----

function treeNode(path, name, depth) {
  const href = dbHref(path)
  const kids = h('ul', { hidden: true })
  const label = name || '(this database)'
  const twisty = h('button', {
    type: 'button',
    class: 'twisty',
    'aria-expanded': 'false',
    'aria-label': `Expand ${label}`,
    text: '+',
  })
  let loaded = false
  const toggle = async () => {
    const open = twisty.getAttribute('aria-expanded') !== 'true'
    twisty.setAttribute('aria-expanded', String(open))
    twisty.setAttribute('aria-label', `${open ? 'Collapse' : 'Expand'} ${label}`)
    twisty.textContent = open ? '−' : '+'
    kids.hidden = !open
    if (open && !loaded) {
      loaded = true
      try {
        const page = await run(path, listSchema('databases', 200))
        const names = page.data.map(d => d.name)
        mount(kids, names.length ? names.map(n => treeNode(path ? `${path}/${n}` : n, n, depth + 1)) : h('li', { class: 'muted' }, 'no child databases'))
        markCurrent(parseHash().path ?? null)
      } catch (e) {
        mount(kids, h('li', { class: 'muted' }, e.status === 401 || e.status === 403 ? 'children need an admin key' : describe(e)))
      }
    }
  }
  twisty.addEventListener('click', toggle)
  const li = h('li', { 'data-path': path }, twisty, h('a', { href }, label), kids)
  li.expand = toggle
  return li
}

function renderTree() {
  const root = treeNode('', '', 0)
  mount(tree, h('h2', { class: 'muted small' }, 'Databases'), h('ul', {}, root))
  root.expand()
}

function markCurrent(path) {
  for (const a of tree.querySelectorAll('a')) {
    if (a.getAttribute('href') === dbHref(path)) a.setAttribute('aria-current', 'page')
    else a.removeAttribute('aria-current')
  }
}

// ----- the query console -----

function queryView(path) {
  const text = h('textarea', { id: 'query', 'aria-label': 'Query', rows: 8, spellcheck: 'false' })
  text.value = sessionStorage.getItem('tally.console.lastQuery') || 'Paginate(Collections())'
  const result = h('div', { class: 'result', role: 'region', 'aria-label': 'Result', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Run a query to see its answer here.'))
  const timing = h('p', { class: 'muted' })
  const runBtn = h('button', { type: 'submit' }, 'Run')
  const form = h('form', { class: 'stack', 'aria-label': 'Query console' }, text, h('div', {}, runBtn, ' ', h('span', { class: 'muted' }, 'Ctrl+Enter runs')))
  const go = async () => {
    sessionStorage.setItem('tally.console.lastQuery', text.value)
    runBtn.disabled = true
    mount(result, h('p', { class: 'muted' }, 'Running…'))
    try {
      const a = await runText(path, text.value)
      mount(result, h('pre', { class: 'answer' }, a.text ?? JSON.stringify(a.resource, null, 2)))
      mount(timing, `txn time ${a.txnTime} · ${a.queryTime} ms`)
    } catch (e) {
      const where = e.line ? ` (line ${e.line}, column ${e.column})` : ''
      mount(result, h('pre', { class: 'error', role: 'alert' }, `${e.code}: ${e.description}${e.line ? '' : where}`))
      mount(timing, '')
    } finally {
      runBtn.disabled = false
    }
  }
  form.addEventListener('submit', ev => {
    ev.preventDefault()
    go()
  })
  text.addEventListener('keydown', ev => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault()
      go()
    }
  })
  const where = path ? `database ${path}` : 'the secret’s own database'
  return [h('h1', {}, 'Query'), h('p', { class: 'muted' }, `Runs in ${where}, in the JavaScript driver’s syntax (q. prefixes optional).`), card('Query console', form), card('Answer', result, timing)]
}

// ----- routing -----

async function route() {
  if (!session.secret) return signInView()
  const r = parseHash()
  markCurrent(r.path ?? null)
  let content
  try {
    if (r.view === 'ledger') content = await ledgerView()
    else if (r.view === 'query') content = queryView(r.path)
    else if (r.view === 'collection') content = await collectionView(r.path, r.args[0])
    else if (r.view === 'doc') content = await documentView(r.path, r.args[0], r.args[1])
    else content = await databaseView(r.path)
  } catch (e) {
    content = [h('h1', {}, 'Could not load this page'), errorLine(e)]
  }
  mount(main, content)
  const heading = main.querySelector('h1')
  if (heading) document.title = `${heading.textContent} · Tally console`
}

function start() {
  tree.hidden = false
  topnav.hidden = false
  renderTree()
  route()
}

document.getElementById('signout').addEventListener('click', () => {
  session.clear()
  sessionStorage.removeItem('tally.console.lastQuery')
  location.hash = ''
  signInView()
})
window.addEventListener('hashchange', route)
// A database was created or deleted: the tree shows it at once.
window.addEventListener('tally:databases', () => {
  renderTree()
  markCurrent(parseHash().path ?? null)
})

if (session.secret) start()
else signInView()
