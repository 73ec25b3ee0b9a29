//! Permissions: what the query's role may do, asked at every read, write, history edit
//! and function call.
//!
//! Three kinds of role answer (FQL v4 semantics, see `docs/security.md` for the table):
//! - **built-in** roles decide from the database and the collection alone: `admin`
//!   reads its database and every descendant and writes its own database; `server` is
//!   `admin` without databases, keys, roles or access providers; `server-readonly`
//!   only reads; `client` only touches schema marked `public` (legacy permissions);
//! - **user-defined** roles (keys with `role: Role("x")`, functions with a role,
//!   `secret:@role/x`) grant actions per resource, `true` or a predicate lambda run
//!   read-only with v4's arguments; they act only in their own database;
//! - **members** (tokens, `secret:@doc/...`) hold every role whose `membership` admits
//!   their identity document, plus reading their own identity document and credentials
//!   and reading and deleting their own tokens;
//! - **JWT logins** hold the roles their access provider grants the token's claims
//!   (`crate::jwt`), and nothing else.
//!
//! Architecture invariant: deciding never writes and never reads a clock; predicates
//! run at the transaction ts with [`Role::Predicate`], so the read-only pass and the
//! executor reach the same answer.

use std::collections::BTreeMap;
use std::rc::Rc;

use tally_value::{Object, Ref, Value};

use crate::auth::Role;
use crate::catalog::{internal_id, IndexDef, Target};
use crate::error::{code, permission_denied, Result};
use crate::eval::Eval;
use crate::model::{native, CollId, DbId};

/// Most roles scanned when working out a member's roles.
pub const ROLES_SCAN_MAX: usize = 4096;
/// Most roles whose membership may name one collection (as v4).
pub const ROLES_PER_COLLECTION_MAX: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Read,
    Write,
    Create,
    CreateWithId,
    Delete,
    HistoryRead,
    HistoryWrite,
    UnrestrictedRead,
    Call,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Read,
        Action::Write,
        Action::Create,
        Action::CreateWithId,
        Action::Delete,
        Action::HistoryRead,
        Action::HistoryWrite,
        Action::UnrestrictedRead,
        Action::Call,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Create => "create",
            Action::CreateWithId => "create_with_id",
            Action::Delete => "delete",
            Action::HistoryRead => "history_read",
            Action::HistoryWrite => "history_write",
            Action::UnrestrictedRead => "unrestricted_read",
            Action::Call => "call",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == s)
    }

    /// Parameter counts this action's predicate may take besides one (which receives
    /// the whole argument); empty for `call`, whose arguments are the caller's.
    pub fn predicate_arity(self) -> &'static [usize] {
        match self {
            Action::Write => &[2, 3],
            Action::CreateWithId => &[2],
            Action::HistoryWrite => &[4],
            Action::Call => &[],
            _ => &[1],
        }
    }
}

/// What a privilege is about: a collection (user or native, by internal id), an index,
/// or a user-defined function (both by internal id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Coll(CollId),
    Index(u64),
    Function(u64),
}

/// Collections only `admin` may touch among the built-in roles (v4's root classes).
const ROOT_CLASSES: [CollId; 4] = [native::DATABASES, native::KEYS, native::ROLES, native::ACCESS_PROVIDERS];

fn root_class(res: Resource) -> bool {
    matches!(res, Resource::Coll(c) if ROOT_CLASSES.contains(&c))
}

/// The arguments a predicate receives, built (only when a predicate runs) for the
/// predicate's arity.
pub enum PredArgs<'a> {
    /// `read delete history_read`, membership: the document's ref.
    Ref(&'a Ref),
    /// `create`: the new document's fields.
    Data(&'a Object),
    /// `create_with_id`: fields, or `[fields, ref]` for two parameters.
    DataRef(&'a Object, &'a Ref),
    /// `write`: `[old, new]`, or `[old, new, ref]` for three parameters.
    Write(&'a Object, &'a Object, &'a Ref),
    /// `history_write`: `[ref, ts, action, data]`.
    History(&'a Ref, u64, &'static str, &'a Object),
    /// Index `read`/`unrestricted_read`: the terms array; `call`: the arguments.
    Value(&'a Value),
    /// Collection `unrestricted_read`.
    Null,
}

impl PredArgs<'_> {
    fn for_arity(&self, arity: usize) -> Value {
        let r = |r: &Ref| Value::Ref(r.clone());
        match self {
            PredArgs::Ref(x) => r(x),
            PredArgs::Data(d) => fields_view(d),
            PredArgs::DataRef(d, _) if arity < 2 => fields_view(d),
            PredArgs::DataRef(d, x) => Value::Array(vec![fields_view(d), r(x)]),
            PredArgs::Write(o, n, x) if arity == 3 => Value::Array(vec![fields_view(o), fields_view(n), r(x)]),
            PredArgs::Write(o, n, _) => Value::Array(vec![fields_view(o), fields_view(n)]),
            PredArgs::History(x, ts, a, d) => {
                Value::Array(vec![r(x), micros_to_time(*ts), Value::String((*a).into()), fields_view(d)])
            }
            PredArgs::Value(v) => (*v).clone(),
            PredArgs::Null => Value::Null,
        }
    }

    fn doc(&self) -> Option<&Ref> {
        match self {
            PredArgs::Ref(r) | PredArgs::DataRef(_, r) | PredArgs::Write(_, _, r) | PredArgs::History(r, ..) => Some(r),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
enum Policy {
    Allow,
    /// Predicate lambdas (`Query` values) in role-name order; any `true` allows.
    Predicates(Vec<Value>),
}

/// The privileges of a set of user-defined roles, resolved at the transaction ts.
#[derive(Debug, Default)]
pub struct Privileges {
    table: BTreeMap<(Resource, Action), Policy>,
}

impl Privileges {
    fn add(&mut self, res: Resource, action: Action, v: &Value) {
        let new = match v {
            Value::Bool(true) => Policy::Allow,
            Value::Query(_) => Policy::Predicates(vec![v.clone()]),
            _ => return,
        };
        match (self.table.get_mut(&(res, action)), new) {
            (Some(Policy::Allow), _) => {}
            (Some(slot), Policy::Allow) => *slot = Policy::Allow,
            (Some(Policy::Predicates(ps)), Policy::Predicates(mut more)) => ps.append(&mut more),
            (None, new) => {
                self.table.insert((res, action), new);
            }
        }
    }

    fn get(&self, res: Resource, action: Action) -> Option<&Policy> {
        self.table.get(&(res, action))
    }
}

/// How the elements of a set are filtered for reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFilter {
    /// Every element is readable (built-in roles in scope, `unrestricted_read`).
    All,
    /// No element is readable (the set reads as empty).
    Nothing,
    /// Ask for each element's document.
    PerDoc,
}

/// A value listed under a schema field: an array, one object, or nothing.
pub fn listed(v: Option<&Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other.clone()],
    }
}

/// A document's fields as predicates see them: no hidden fields, no `ref`/`ts`.
pub fn fields_view(data: &Object) -> Value {
    Value::Object(
        data.iter()
            .filter(|(k, _)| !crate::model::HIDDEN_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

fn micros_to_time(ts: u64) -> Value {
    Value::Time(chrono::DateTime::<chrono::Utc>::from_timestamp_micros(ts as i64).unwrap_or_default())
}

/// Cache of resolved privileges, keyed by what they depend on. Lookup only.
pub(crate) type PrivCache = std::collections::HashMap<(DbId, Role, u64), Rc<Privileges>>;

impl<'a> Eval<'a> {
    /// Is `db` the query's database or one of its descendants?
    fn in_scope(&mut self, db: DbId) -> Result<bool> {
        if db == self.auth.db {
            return Ok(true);
        }
        let at = self.txn_ts();
        Ok(crate::run::db_path_from(&mut self.tx, self.auth.db, db, at)?.is_some())
    }

    /// The answer of a built-in role (it does not depend on the document), or None for
    /// user-defined roles and members.
    fn builtin_decision(&mut self, db: DbId, res: Resource, action: Action) -> Result<Option<bool>> {
        use Action::*;
        // Every permission question passes here first: an index binding never gets an
        // answer, so it cannot read, call or write (see `crate::purity`).
        self.require_pure_ok("reads, writes or calls a function")?;
        let reads = matches!(action, Read | HistoryRead | UnrestrictedRead);
        let role = match &self.auth.role {
            Role::Custom(_) | Role::Member | Role::Jwt => return Ok(None),
            r => r.clone(),
        };
        Ok(Some(match role {
            Role::Admin => match action {
                Read | HistoryRead | UnrestrictedRead | Call => self.in_scope(db)?,
                _ => db == self.auth.db,
            },
            // Calling a function acts: its body runs in the function's database, with
            // the function's role or the caller's. Only an admin acts below its own
            // database (it could make a key there anyway); server roles call functions
            // of their own database only.
            Role::Server => match action {
                _ if reads => !root_class(res) && self.in_scope(db)?,
                Call => db == self.auth.db,
                _ => !root_class(res) && db == self.auth.db,
            },
            Role::ServerReadOnly => reads && !root_class(res) && self.in_scope(db)?,
            Role::Predicate => match action {
                Read | UnrestrictedRead => !root_class(res) && db == self.auth.db,
                Call => db == self.auth.db,
                _ => false,
            },
            Role::Client => self.public(db, res, action)?,
            Role::Custom(_) | Role::Member | Role::Jwt => return Ok(None),
        }))
    }

    /// Legacy permissions: schema marked `permissions: {read|write|create|call: "public"}`
    /// lets `client` keys (and tokens) do that action in the schema's own database.
    fn public(&mut self, db: DbId, res: Resource, action: Action) -> Result<bool> {
        if db != self.auth.db {
            return Ok(false);
        }
        let field = match (res, action) {
            (Resource::Coll(_), Action::Read | Action::HistoryRead | Action::UnrestrictedRead) => "read",
            (Resource::Coll(_), Action::Write | Action::Delete) => "write",
            (Resource::Coll(_), Action::Create | Action::CreateWithId) => "create",
            (Resource::Index(_), Action::Read | Action::UnrestrictedRead) => "read",
            (Resource::Function(_), Action::Call) => "call",
            _ => return Ok(false),
        };
        let (coll, id) = match res {
            Resource::Coll(c) if native::name(c).is_some() => return Ok(false),
            Resource::Coll(c) => (native::COLLECTIONS, c),
            Resource::Index(i) => (native::INDEXES, i),
            Resource::Function(f) => (native::FUNCTIONS, f),
        };
        let Some(schema) = self.schema_doc_by_id(db, coll, id)? else { return Ok(false) };
        Ok(matches!(schema.get("permissions").and_then(|p| p.get(field)), Some(Value::String(s)) if s == "public"))
    }

    /// The live schema document of kind `coll` whose internal id is `id`.
    fn schema_doc_by_id(&mut self, db: DbId, coll: CollId, id: u64) -> Result<Option<Object>> {
        let at = self.txn_ts();
        let docs = self.tx.scan_docs(db, coll, None, false, at, usize::MAX)?;
        Ok(docs.into_iter().map(|(_, d)| d.data).find(|d| internal_id(d) == Some(id)))
    }

    /// Tokens and `@doc` secrets may always read their own identity document and their
    /// own credentials, and read and delete their own tokens.
    fn member_baseline(&mut self, db: DbId, res: Resource, action: Action, doc: Option<&Ref>) -> Result<bool> {
        let (Role::Member, Some(identity), Some(doc)) = (&self.auth.role, self.auth.identity.clone(), doc) else {
            return Ok(false);
        };
        if action == Action::Read && db == self.auth.db && *doc == identity {
            return Ok(true);
        }
        let coll = match (res, action) {
            (Resource::Coll(native::CREDENTIALS), Action::Read) => native::CREDENTIALS,
            (Resource::Coll(native::TOKENS), Action::Read | Action::Delete) => native::TOKENS,
            _ => return Ok(false),
        };
        if db != self.auth.db {
            return Ok(false);
        }
        let at = self.txn_ts();
        let d = self.tx.live_doc(db, coll, &doc.id, at)?;
        Ok(d.is_some_and(|d| d.data.get("instance") == Some(&Value::Ref(identity))))
    }

    /// May the query do `action` on `res` in `db`?
    pub fn permitted(&mut self, db: DbId, res: Resource, action: Action, args: &PredArgs<'_>) -> Result<bool> {
        if let Some(d) = self.builtin_decision(db, res, action)? {
            return Ok(d);
        }
        if self.member_baseline(db, res, action, args.doc())? {
            return Ok(true);
        }
        if self.auth.role == Role::Member && self.public(db, res, action)? {
            return Ok(true);
        }
        if db != self.auth.db {
            return Ok(false);
        }
        let privs = self.privileges()?;
        let preds = match privs.get(res, action) {
            None => return Ok(false),
            Some(Policy::Allow) => return Ok(true),
            Some(Policy::Predicates(ps)) => ps.clone(),
        };
        for p in &preds {
            if self.run_predicate(p, args)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// [`Eval::permitted`], or `permission denied`.
    pub fn require(&mut self, db: DbId, res: Resource, action: Action, args: &PredArgs<'_>) -> Result<()> {
        if self.permitted(db, res, action, args)? {
            Ok(())
        } else {
            Err(permission_denied())
        }
    }

    // ---- the questions the function modules ask ----

    /// May the query read document `r` of collection `coll` in `db`?
    pub fn can_read(&mut self, db: DbId, coll: CollId, r: &Ref) -> Result<bool> {
        self.permitted(db, Resource::Coll(coll), Action::Read, &PredArgs::Ref(r))
    }

    /// May the query read the history (events) of document `r`?
    pub fn can_read_history(&mut self, db: DbId, coll: CollId, r: &Ref) -> Result<bool> {
        self.permitted(db, Resource::Coll(coll), Action::HistoryRead, &PredArgs::Ref(r))
    }

    /// May the query read the document an element of a set refers to? Refs that do not
    /// resolve are left to the reader (they read as missing).
    pub fn can_read_ref(&mut self, r: &Ref) -> Result<bool> {
        match self.resolve(r) {
            Ok(Target::Doc { db, coll, .. }) => self.can_read(db, coll, r),
            Ok(Target::NativeColl { .. }) => Ok(true),
            Err(e) if e.code == code::INVALID_REF => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// How `Documents(coll)` (and the events of a collection) are filtered: v4 never
    /// refuses the set, it hides what the caller cannot read.
    pub fn docs_filter(&mut self, db: DbId, coll: CollId) -> Result<ReadFilter> {
        let res = Resource::Coll(coll);
        if let Some(d) = self.builtin_decision(db, res, Action::Read)? {
            return Ok(if d { ReadFilter::All } else { ReadFilter::Nothing });
        }
        if self.permitted(db, res, Action::UnrestrictedRead, &PredArgs::Null)? {
            return Ok(ReadFilter::All);
        }
        self.policy_filter(db, res)
    }

    /// The filter a role's `read` policy on `res` implies (members may always read some
    /// tokens and credentials, so those are filtered per document).
    fn policy_filter(&mut self, db: DbId, res: Resource) -> Result<ReadFilter> {
        if self.auth.role == Role::Member {
            if matches!(res, Resource::Coll(native::TOKENS | native::CREDENTIALS)) {
                return Ok(ReadFilter::PerDoc);
            }
            if self.public(db, res, Action::Read)? {
                return Ok(ReadFilter::All);
            }
        }
        if db != self.auth.db {
            return Ok(ReadFilter::Nothing);
        }
        Ok(match self.privileges()?.get(res, Action::Read) {
            None => ReadFilter::Nothing,
            Some(Policy::Allow) => ReadFilter::All,
            Some(Policy::Predicates(_)) => ReadFilter::PerDoc,
        })
    }

    /// How a native collection (`Collections()`, `Keys()`, ...) is read as a set: it is
    /// refused outright when the role may read none of it.
    pub fn native_set_filter(&mut self, db: DbId, coll: CollId) -> Result<ReadFilter> {
        match self.docs_filter(db, coll)? {
            ReadFilter::Nothing => Err(permission_denied()),
            f => Ok(f),
        }
    }

    /// How `Match(index, terms)` is filtered: `unrestricted_read` on the index reads
    /// everything; `read` reads what the caller may read of the source documents;
    /// neither refuses the set.
    pub fn index_filter(&mut self, db: DbId, def: &IndexDef, terms: &Value) -> Result<ReadFilter> {
        let res = Resource::Index(def.id);
        let builtin = !matches!(self.auth.role, Role::Custom(_) | Role::Member | Role::Jwt);
        let unrestricted = !builtin && self.permitted(db, res, Action::UnrestrictedRead, &PredArgs::Value(terms))?;
        if unrestricted {
            return Ok(ReadFilter::All);
        }
        if !self.permitted(db, res, Action::Read, &PredArgs::Value(terms))? {
            return Err(permission_denied());
        }
        // Readable index: the elements are filtered by their documents.
        let mut all = true;
        for src in &def.sources {
            match self.docs_filter(db, src.coll)? {
                ReadFilter::All => {}
                _ => all = false,
            }
        }
        Ok(if all { ReadFilter::All } else { ReadFilter::PerDoc })
    }

    /// May the query call function `fid` (in `db`) with `args` (the raw `arguments`)?
    pub fn check_call(&mut self, db: DbId, fid: u64, args: &Value) -> Result<()> {
        self.require(db, Resource::Function(fid), Action::Call, &PredArgs::Value(args))
    }

    /// May the query create `r` in `coll` with `fields`? With an explicit id v4 asks for
    /// `create_with_id`, or else for both `create` and `history_write`.
    pub fn check_create(&mut self, db: DbId, coll: CollId, r: &Ref, fields: &Object, with_id: bool) -> Result<()> {
        let res = Resource::Coll(coll);
        if !with_id {
            return self.require(db, res, Action::Create, &PredArgs::Data(fields));
        }
        if self.permitted(db, res, Action::CreateWithId, &PredArgs::DataRef(fields, r))? {
            return Ok(());
        }
        let ts = self.txn_ts();
        if self.permitted(db, res, Action::Create, &PredArgs::Data(fields))?
            && self.permitted(db, res, Action::HistoryWrite, &PredArgs::History(r, ts, "create", fields))?
        {
            return Ok(());
        }
        Err(permission_denied())
    }

    /// May the query change document `r` from `old` to `new`?
    pub fn check_write(&mut self, db: DbId, coll: CollId, r: &Ref, old: &Object, new: &Object) -> Result<()> {
        self.require(db, Resource::Coll(coll), Action::Write, &PredArgs::Write(old, new, r))
    }

    pub fn check_delete(&mut self, db: DbId, coll: CollId, r: &Ref) -> Result<()> {
        self.require(db, Resource::Coll(coll), Action::Delete, &PredArgs::Ref(r))
    }

    /// May the query add or remove the event of `r` at `ts` (`Insert`/`Remove`)?
    pub fn check_history_write(
        &mut self,
        db: DbId,
        coll: CollId,
        r: &Ref,
        ts: u64,
        action: &'static str,
        data: &Object,
    ) -> Result<()> {
        self.require(db, Resource::Coll(coll), Action::HistoryWrite, &PredArgs::History(r, ts, action, data))
    }

    // ---- user-defined roles ----

    /// The privileges of the query's user-defined roles (or its members' roles).
    fn privileges(&mut self) -> Result<Rc<Privileges>> {
        let key = (self.auth.db, self.auth.role.clone(), self.tx.schema_gen);
        if let Some(p) = self.priv_cache.get(&key) {
            return Ok(p.clone());
        }
        let names = match &self.auth.role {
            Role::Custom(names) => names.clone(),
            Role::Member => self.member_roles()?,
            Role::Jwt => self.jwt_roles()?,
            _ => Vec::new(),
        };
        let p = Rc::new(self.resolve_privileges(&names)?);
        self.priv_cache.insert(key, p.clone());
        Ok(p)
    }

    fn resolve_privileges(&mut self, names: &[String]) -> Result<Privileges> {
        let db = self.auth.db;
        let at = self.txn_ts();
        let mut out = Privileges::default();
        for name in names {
            let Some(role) = self.tx.live_doc(db, native::ROLES, name, at)? else { continue };
            for (i, p) in listed(role.data.get("privileges")).iter().enumerate() {
                let Some(Value::Ref(r)) = p.get("resource") else { continue };
                let Some(res) = self.bound_resource(&role.data, "privileges", i, r)? else { continue };
                let Some(Value::Object(actions)) = p.get("actions") else { continue };
                for (k, v) in actions {
                    if let Some(a) = Action::parse(k) {
                        out.add(res, a, v);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The resource entry `i` of a role's `field` (`privileges` or `membership`) grants:
    /// the collection, index or function it was bound to when the role was written,
    /// whatever it is called now, and nothing once that is gone (a resource created
    /// later under the same name is another one). Native collections (`Keys()`, ...) are
    /// resolved by name; roles written before bindings existed resolve the name, but
    /// only to a resource older than the role.
    fn bound_resource(&mut self, role: &Object, field: &str, i: usize, r: &Ref) -> Result<Option<Resource>> {
        let bound = match role.get(crate::model::ROLE_RESOURCE_IDS) {
            Some(Value::Object(b)) => match b.get(field) {
                Some(Value::Array(ids)) => Some(ids.get(i).cloned().unwrap_or(Value::Null)),
                _ => None,
            },
            _ => None,
        };
        let kind = |id: u64| match r.native_parent() {
            Some("collections") => Some(Resource::Coll(id)),
            Some("indexes") => Some(Resource::Index(id)),
            Some("functions") => Some(Resource::Function(id)),
            _ => None,
        };
        match bound {
            Some(Value::Long(id)) => Ok(kind(id as u64)),
            Some(_) => {
                Ok(self.resource_of(r)?.filter(|res| matches!(res, Resource::Coll(c) if native::name(*c).is_some())))
            }
            None => {
                let role_id = internal_id(role).unwrap_or(0);
                Ok(self.resource_of(r)?.filter(|res| match res {
                    Resource::Coll(c) if native::name(*c).is_some() => true,
                    Resource::Coll(i) | Resource::Index(i) | Resource::Function(i) => *i < role_id,
                }))
            }
        }
    }

    /// The resource a privilege's `resource` ref names in the query's database.
    pub fn resource_of(&mut self, r: &Ref) -> Result<Option<Resource>> {
        let at = self.txn_ts();
        let target = match self.with_read_ts(at, |ev| ev.resolve(r)) {
            Ok(t) => t,
            Err(e) if e.code == code::INVALID_REF => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(match target {
            Target::NativeColl { db, coll } if db == self.auth.db => Some(Resource::Coll(coll)),
            Target::Doc { db, coll, id } if db == self.auth.db => {
                let Some(d) = self.tx.live_doc(db, coll, &id, at)? else { return Ok(None) };
                match (coll, internal_id(&d.data)) {
                    (native::COLLECTIONS, Some(i)) => Some(Resource::Coll(i)),
                    (native::INDEXES, Some(i)) => Some(Resource::Index(i)),
                    (native::FUNCTIONS, Some(i)) => Some(Resource::Function(i)),
                    _ => None,
                }
            }
            _ => None,
        })
    }

    /// The roles whose membership admits the query's identity, in name order.
    fn member_roles(&mut self) -> Result<Vec<String>> {
        let Some(identity) = self.auth.identity.clone() else { return Ok(Vec::new()) };
        let Some(coll_ref) = identity.collection.as_deref() else { return Ok(Vec::new()) };
        let coll_ref = coll_ref.clone();
        let Some(Resource::Coll(cid)) = self.resource_of(&coll_ref)? else { return Ok(Vec::new()) };
        let db = self.auth.db;
        let at = self.txn_ts();
        let roles = self.tx.scan_docs(db, native::ROLES, None, false, at, ROLES_SCAN_MAX)?;
        let mut out = Vec::new();
        for (name, role) in roles {
            for (i, m) in listed(role.data.get("membership")).iter().enumerate() {
                let Some(Value::Ref(r)) = m.get("resource") else { continue };
                if self.bound_resource(&role.data, "membership", i, r)? != Some(Resource::Coll(cid)) {
                    continue;
                }
                let admitted = match m.get("predicate") {
                    None | Some(Value::Null) => true,
                    Some(p) => self.run_predicate(p, &PredArgs::Ref(&identity))?,
                };
                if admitted {
                    out.push(name.clone());
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Run a privilege or membership predicate: read-only, at the transaction ts, with
    /// the predicate reader's rights and the caller's identity. Only `true` allows; an
    /// error denies (except running out of steps, which ends the query).
    pub(crate) fn run_predicate(&mut self, q: &Value, args: &PredArgs<'_>) -> Result<bool> {
        let lam = match self.lambda_from_value(q) {
            Ok(l) => l,
            Err(_) => return Ok(false),
        };
        let arg = args.for_arity(lam.params.arity());
        let saved = std::mem::replace(&mut self.auth.role, Role::Predicate);
        self.pred_depth += 1;
        let ts = self.txn_ts();
        let r = self.with_fresh_env(|ev| ev.with_read_ts(ts, |ev| ev.apply(&lam, vec![arg])));
        self.pred_depth -= 1;
        self.auth.role = saved;
        match r {
            Ok(Value::Bool(true)) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) if e.code == code::TIME_OUT => Err(e),
            Err(_) => Ok(false),
        }
    }
}
