//! The evaluator: walks an [`Expr`] against a [`Tx`] (a snapshot plus this transaction's
//! own writes). The same evaluator runs read-only queries on a snapshot and write
//! transactions inside the deterministic executor.
//!
//! Architecture invariant: nothing here reads a clock (except the optional wall-clock
//! deadline of read-only queries, which never runs in the executor), draws randomness,
//! or iterates an unordered container into a result.

use std::rc::Rc;
use std::time::Instant;

use tally_value::object::Key;
use tally_value::Value;

use crate::auth::Auth;
use crate::error::{code, invalid_argument, invalid_expression, wrong_type, FqlError, Result};
use crate::expr::{Call, Expr};
use crate::model::Tx;

/// Called every [`YIELD_STEPS`] steps of read-only evaluation (never in the executor), so a
/// server can hand the thread's evaluation slot to a more deserving tenant (see
/// tally-server's scheduler). It may block; it never changes a result.
pub static YIELD_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Steps between yield points (a power of two). About a quarter of a millisecond of a
/// heavy read: the longest a quiet tenant's query waits for a flood's query to let go of
/// its slot. The hook costs one relaxed atomic load when nobody waits.
pub const YIELD_STEPS: u64 = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reads only; the first write function aborts evaluation with `needs_write`.
    ReadOnly,
    /// Inside the executor: writes go to the transaction's overlay.
    Write,
}

/// Bounds that keep one query from running away.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Evaluation steps (every expression evaluated counts one). Deterministic, so the
    /// executor uses it as its query timeout.
    pub steps_max: u64,
    /// Nested lambda applications / UDF calls.
    pub call_depth_max: u32,
    /// Largest page a `Paginate` may ask for.
    pub page_size_max: usize,
    /// Largest array any function may build.
    pub array_len_max: usize,
    /// Bytes of values the query may hold at once (see [`crate::budget`]).
    pub value_bytes_max: u64,
    /// Largest answer, as encoded on the wire.
    pub answer_bytes_max: u64,
    /// Bytes of work (values built, whether kept or dropped, and bytes read from storage)
    /// after which evaluation stops with [`Eval::work_exceeded`]. Unbounded except for a
    /// server's inline pass, which stops a query that turns out heavy so that it can run
    /// again off the async threads; never set in the executor.
    pub work_bytes_max: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            steps_max: 20_000_000,
            call_depth_max: 200,
            page_size_max: 100_000,
            array_len_max: 1_000_000,
            value_bytes_max: crate::budget::QUERY_BYTES_MAX,
            answer_bytes_max: crate::budget::ANSWER_BYTES_MAX,
            work_bytes_max: u64::MAX,
        }
    }
}

/// A callable lambda: parameter pattern plus body.
#[derive(Clone, Debug)]
pub struct Lambda {
    pub params: Params,
    pub body: Rc<Expr>,
    /// True when the lambda was written in place (errors in its body get an "expr" position).
    pub literal: bool,
}

#[derive(Clone, Debug)]
pub enum Params {
    One(String),
    Many(Vec<String>),
}

impl Params {
    pub fn arity(&self) -> usize {
        match self {
            Params::One(_) => 1,
            Params::Many(v) => v.len(),
        }
    }
}

/// [`Eval::indexes_on`]'s cache entry: the schema generation and read ts it holds for,
/// and the definitions.
pub(crate) type CachedIndexes = (u64, u64, std::sync::Arc<[crate::catalog::IndexDef]>);

pub struct Eval<'a> {
    pub tx: Tx<'a>,
    pub mode: Mode,
    pub auth: Auth,
    pub limits: Limits,
    env: Vec<(Key, Value)>,
    steps: u64,
    call_depth: u32,
    /// Bytes of values held (see [`crate::budget`]); its limit is `limits.value_bytes_max`.
    budget: crate::budget::Budget,
    /// `tx.bytes_read` already charged to the budget.
    read_charged: u64,
    /// Bytes of values built so far, never given back (see `Limits::work_bytes_max`).
    built: u64,
    /// Whether evaluation hit `Limits::work_bytes_max` (even if the error was then
    /// swallowed, e.g. by a role predicate that failed closed).
    work_stopped: bool,
    /// Wall-clock deadline; only ever set for read-only evaluation outside the executor.
    pub deadline: Option<Instant>,
    /// Seed for ids and secrets, from the transaction input (never drawn here).
    pub entropy: [u8; 32],
    ids_issued: u64,
    /// Read ts override stack for `At`.
    at_stack: Vec<u64>,
    /// Index definitions by source collection, valid while `tx.schema_gen` and the read
    /// ts are unchanged. Lookup only; never iterated into a result.
    pub(crate) index_cache: std::collections::HashMap<(u64, u64), CachedIndexes, foldhash::fast::FixedState>,
    /// Collection ids by (database, name), valid while `tx.schema_gen` and the read ts are
    /// unchanged (see [`crate::catalog`]). Lookup only; a short list because a transaction
    /// names few collections.
    pub(crate) coll_cache: Vec<crate::catalog::CollCacheEntry>,
    /// While `Eval::indexes_on` parses index documents: the collection names looked up,
    /// in order (what a hit in [`crate::schema_cache`] must look up again).
    pub(crate) lookup_log: Option<Vec<String>>,
    /// Resolved privileges of user-defined roles (see [`crate::perm`]). Lookup only.
    pub(crate) priv_cache: crate::perm::PrivCache,
    /// How many role predicates are running: inside one, nothing may write.
    pub(crate) pred_depth: u32,
    /// How many index bindings are running: inside one, nothing beyond the document may
    /// be read or written (see [`crate::purity`]).
    pub(crate) binding_depth: u32,
    /// Heads of the secret placeholders this transaction issued (see `crate::secret`).
    pub secrets_issued: Vec<String>,
    /// Set by `Do` for an expression whose value it drops (not its last): taken by the
    /// next [`Eval::eval`], which hands it to the call it evaluates as `unused`.
    pub(crate) next_unused: bool,
    /// The running call's value is dropped by its caller ([`Eval::result_unused`]).
    unused: bool,
    /// Set by a call that returned null instead of a value nobody uses: the sizes that
    /// value would have been charged ([`Eval::skipped_result`]).
    skipped_sizes: Option<(u64, u64)>,
}

impl<'a> Eval<'a> {
    pub fn new(tx: Tx<'a>, mode: Mode, auth: Auth) -> Eval<'a> {
        Eval {
            tx,
            mode,
            auth,
            limits: Limits::default(),
            env: Vec::new(),
            steps: 0,
            call_depth: 0,
            budget: crate::budget::Budget::new(crate::budget::QUERY_BYTES_MAX),
            read_charged: 0,
            built: 0,
            work_stopped: false,
            deadline: None,
            entropy: [0; 32],
            ids_issued: 0,
            at_stack: Vec::new(),
            index_cache: std::collections::HashMap::default(),
            coll_cache: Vec::new(),
            lookup_log: None,
            priv_cache: crate::perm::PrivCache::new(),
            pred_depth: 0,
            binding_depth: 0,
            secrets_issued: Vec::new(),
            next_unused: false,
            unused: false,
            skipped_sizes: None,
        }
    }

    /// Issue a key or token secret: `(placeholder to answer with, hash to store)`.
    pub fn issue_secret(&mut self, kind: u8, db: crate::model::DbId, id: u64) -> (String, String) {
        let issued = crate::secret::issue(&self.entropy, kind, db, id);
        self.secrets_issued.push(issued.head);
        (issued.placeholder, issued.hashed)
    }

    /// The entropy password digests must be tagged with, when digests are acceptable at
    /// all: only in the executor, where the input was redacted by the receiving node.
    pub fn password_entropy(&self) -> Option<&[u8; 32]> {
        (self.mode == Mode::Write && self.entropy != [0; 32]).then_some(&self.entropy)
    }

    /// The transaction's timestamp (commit ts for writes, snapshot ts for reads).
    pub fn txn_ts(&self) -> u64 {
        self.tx.ts
    }

    /// The ts reads see: the txn ts, or the one set by an enclosing `At`.
    pub fn read_ts(&self) -> u64 {
        self.at_stack.last().copied().unwrap_or(self.tx.ts)
    }

    pub fn with_read_ts<T>(&mut self, ts: u64, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.at_stack.push(ts);
        let r = f(self);
        self.at_stack.pop();
        r
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Set the limits (the memory budget's included).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.tx.read_bytes_max = limits.work_bytes_max;
        self.budget = crate::budget::Budget::new(limits.value_bytes_max);
    }

    /// Bytes of values held now (see [`crate::budget`]).
    pub fn mem_used(&self) -> u64 {
        self.budget.used()
    }

    /// Give back what was charged since `mem_used()` was `mark`: those values are dropped.
    pub fn mem_reset(&mut self, mark: u64) {
        self.budget.reset(mark);
    }

    /// Charge `bytes` of newly built values; errors past the query's memory limit.
    pub fn mem_charge(&mut self, bytes: u64) -> Result<()> {
        self.built = self.built.saturating_add(bytes);
        self.budget.charge(bytes)?;
        self.check_work()
    }

    /// Work done so far: bytes of values built (dropped ones included) and bytes read.
    pub fn work(&self) -> u64 {
        self.built.saturating_add(self.tx.bytes_read)
    }

    /// Announce `bytes` of work a function is about to do in one go (a `Repeat`, an
    /// `NGram`), before doing it: past `Limits::work_bytes_max` evaluation stops here,
    /// without having done it. Charges nothing to the memory budget (the result is
    /// charged when it is returned), so results never depend on it.
    pub fn will_build(&mut self, bytes: u64) -> Result<()> {
        if self.work().saturating_add(bytes) > self.limits.work_bytes_max {
            self.work_stopped = true;
            return Err(Self::work_exceeded(self.limits.work_bytes_max));
        }
        Ok(())
    }

    pub(crate) fn check_work(&mut self) -> Result<()> {
        if self.work() > self.limits.work_bytes_max {
            self.work_stopped = true;
            return Err(Self::work_exceeded(self.limits.work_bytes_max));
        }
        Ok(())
    }

    /// Whether evaluation stopped at `Limits::work_bytes_max`.
    pub fn work_stopped(&self) -> bool {
        self.work_stopped || self.tx.read_stopped
    }

    /// The error of an evaluation stopped at `Limits::work_bytes_max` (only a server's
    /// inline pass sets it; it then runs the query again without the bound).
    pub fn work_exceeded(max: u64) -> FqlError {
        FqlError::new(
            code::TIME_OUT,
            format!("Query did more than {max} bytes of work in its inline pass; it runs again off the async threads."),
        )
    }

    /// Charge what a call returned: a copy (a variable) or a document decoded from
    /// storage whole, anything else its own slots (its elements were charged when built).
    fn charge_result(&mut self, call: &Call, v: &Value) -> Result<()> {
        let read = self.tx.bytes_read.saturating_sub(self.read_charged);
        self.read_charged = self.tx.bytes_read;
        // A value skipped because nobody uses it is charged as if it had been built, so
        // that skipping it changes no result (nor the executor's rules).
        let skipped = self.skipped_sizes.take();
        let shallow = || skipped.map_or_else(|| crate::budget::shallow_size(v), |s| s.0);
        let deep = || skipped.map_or_else(|| crate::budget::deep_size(v), |s| s.1);
        let size = if call.spec.name == "var" {
            deep()
        } else if read > 0 {
            // What storage returned was decoded fresh: charge it whole, but no more than
            // the result holds (a `Count` streams what it reads and keeps none of it).
            shallow().max(read.min(deep()))
        } else {
            shallow()
        };
        self.mem_charge(size)
    }

    /// Whether the running call's value is dropped by its caller (an expression of `Do`
    /// other than its last). Asked once, at the call's start: a write may then return
    /// null through [`Eval::skipped_result`] instead of building the document it wrote.
    pub fn result_unused(&mut self) -> bool {
        std::mem::take(&mut self.unused)
    }

    /// Null in place of a value nobody uses whose [`crate::budget::shallow_size`] and
    /// [`crate::budget::deep_size`] are `sizes`: it is charged as that value would be.
    pub fn skipped_result(&mut self, sizes: (u64, u64)) -> Value {
        self.skipped_sizes = Some(sizes);
        Value::Null
    }

    /// Called by every write function before it writes.
    pub fn require_write(&self) -> Result<()> {
        self.require_no_predicate()?;
        match self.mode {
            Mode::ReadOnly => Err(FqlError::needs_write()),
            Mode::Write if !self.at_stack.is_empty() && self.read_ts() != self.tx.ts => Err(FqlError::new(
                code::INVALID_WRITE_TIME,
                "Writes are only allowed at the transaction time; remove the write from inside At().",
            )),
            Mode::Write => Ok(()),
        }
    }

    /// Role predicates are read-only: they may not write or issue ids (a definite error,
    /// never `needs_write`, so both evaluation passes deny alike).
    pub fn require_no_predicate(&self) -> Result<()> {
        self.require_pure_ok("writes or issues an id")?;
        if self.pred_depth > 0 {
            return Err(invalid_argument("Role predicates are read-only; they cannot write or issue ids."));
        }
        Ok(())
    }

    /// A fresh document id, unique across the whole ledger: derived from the commit ts
    /// (which the executor keeps strictly increasing and spaces apart for txns that
    /// issue more than 1,000 ids) and a per-transaction counter.
    pub fn new_id(&mut self) -> u64 {
        let base = self.tx.ts.saturating_mul(1000);
        let id = base + self.ids_issued;
        self.ids_issued += 1;
        id
    }

    pub fn ids_issued(&self) -> u64 {
        self.ids_issued
    }

    fn step(&mut self) -> Result<()> {
        self.steps += 1;
        if self.steps > self.limits.steps_max {
            return Err(FqlError::new(
                code::TIME_OUT,
                format!(
                    "Query exceeded its limit of {} evaluation steps; split it or raise X-Query-Timeout.",
                    self.limits.steps_max
                ),
            ));
        }
        // Reads add work between charges (a `Count` keeps nothing it reads).
        self.check_work()?;
        if self.steps & (YIELD_STEPS - 1) == 0 {
            if let Some(d) = self.deadline {
                if Instant::now() > d {
                    return Err(FqlError::new(
                        code::TIME_OUT,
                        "Query timed out (X-Query-Timeout); simplify it or raise the timeout.",
                    ));
                }
                // Only read-only evaluation (the one with a deadline) ever yields.
                if let Some(hook) = YIELD_HOOK.get() {
                    hook();
                }
            }
        }
        Ok(())
    }

    pub fn eval(&mut self, e: &Expr) -> Result<Value> {
        let unused = std::mem::take(&mut self.next_unused);
        self.step()?;
        match e {
            Expr::Lit(v) => {
                self.mem_charge(crate::budget::deep_size(v))?;
                Ok(v.clone())
            }
            Expr::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.eval(item).map_err(|e| e.at(i))?);
                }
                self.mem_charge(out.len() as u64 * 32)?;
                Ok(Value::Array(out))
            }
            Expr::Object(fields) => {
                let mut out = tally_value::Object::new();
                for (k, v) in fields {
                    let val = self.eval(v).map_err(|e| e.at(k.as_str()).at("object"))?;
                    out.insert(k.clone(), val);
                }
                self.mem_charge(out.len() as u64 * 64)?;
                Ok(Value::Object(out))
            }
            Expr::Call(call) => {
                self.unused = unused;
                let v = (call.spec.handler)(self, call)?;
                self.charge_result(call, &v)?;
                Ok(v)
            }
        }
    }

    // ---- argument helpers for function handlers ----

    /// Evaluate the required argument `key`; errors get `key` in their position.
    pub fn arg(&mut self, call: &Call, key: &str) -> Result<Value> {
        match call.get(key) {
            Some(e) => self.eval(e).map_err(|err| err.at(key_static(call, key))),
            None => Err(invalid_expression(format!("Function `{}` requires argument `{key}`.", call.name()))),
        }
    }

    /// Argument `key` seen in place by `f` when it is written as a literal or a variable
    /// with a literal name (`Select`'s path, `{"var": "doc"}`): the same steps, charges and
    /// errors as [`Eval::arg`] without copying the value (a variable often holds a whole
    /// document). Any other expression is evaluated as [`Eval::arg`] evaluates it.
    pub fn with_arg<T>(&mut self, call: &Call, key: &str, f: impl FnOnce(&Value) -> T) -> Result<T> {
        match call.get(key) {
            Some(Expr::Lit(v)) => {
                // As `eval` of a literal: a step, then the copy it would make charged.
                self.step()
                    .and_then(|()| self.mem_charge(crate::budget::deep_size(v)))
                    .map_err(|err| err.at(key_static(call, key)))?;
                Ok(f(v))
            }
            Some(Expr::Call(c)) if c.spec.name == "var" => match c.primary() {
                Expr::Lit(Value::String(name)) => {
                    let at = self.var_in_place(name).map_err(|err| err.at(key_static(call, key)))?;
                    Ok(f(&self.env[at].1))
                }
                _ => self.arg(call, key).map(|v| f(&v)),
            },
            _ => self.arg(call, key).map(|v| f(&v)),
        }
    }

    /// Argument `key` when it is written as an array of literals (`Select`'s path
    /// `["data", "balance"]`): its elements in place, after exactly the steps, charges and
    /// errors [`Eval::arg`] makes building that array, so limits and results are the same
    /// (the executor's rules do not change). None, with nothing charged, for any other
    /// expression.
    pub fn lit_array_arg<'c>(
        &mut self,
        call: &'c Call,
        key: &str,
    ) -> Result<Option<impl Iterator<Item = &'c Value> + use<'c>>> {
        Ok(self.lit_array_exprs(call, key)?.map(lit_values))
    }

    /// [`Eval::lit_array_arg`] as the expressions themselves, every one an `Expr::Lit`
    /// (see [`lit_values`]).
    pub fn lit_array_exprs<'c>(&mut self, call: &'c Call, key: &str) -> Result<Option<&'c [Expr]>> {
        let Some(Expr::Array(items)) = call.get(key) else { return Ok(None) };
        if !items.iter().all(|e| matches!(e, Expr::Lit(_))) {
            return Ok(None);
        }
        (|| {
            // As `eval` of the array: its step, then each element's step and copy charged
            // (the element's position on an error), then the array's slots.
            self.next_unused = false;
            self.step()?;
            for (i, v) in lit_values(items).enumerate() {
                self.step().and_then(|()| self.mem_charge(crate::budget::deep_size(v))).map_err(|e| e.at(i))?;
            }
            self.mem_charge(items.len() as u64 * 32)
        })()
        .map_err(|err| err.at(key_static(call, key)))?;
        Ok(Some(items))
    }

    /// `eval` of `{"var": name}` up to its result, which stays in the environment: the
    /// call's step, the lookup (and its error), then the charge `charge_result` makes for
    /// a `var`. Returns the variable's position in the environment.
    fn var_in_place(&mut self, name: &str) -> Result<usize> {
        self.step()?;
        let at = self
            .env
            .iter()
            .rposition(|(k, _)| k == name)
            .ok_or_else(|| invalid_expression(format!("Variable '{name}' is not defined.")))?;
        self.read_charged = self.tx.bytes_read;
        self.mem_charge(crate::budget::deep_size(&self.env[at].1))?;
        Ok(at)
    }

    /// Evaluate the optional argument `key`.
    pub fn opt_arg(&mut self, call: &Call, key: &str) -> Result<Option<Value>> {
        match call.get(key) {
            Some(e) => Ok(Some(self.eval(e).map_err(|err| err.at(key_static(call, key)))?)),
            None => Ok(None),
        }
    }

    /// The primary argument.
    pub fn primary(&mut self, call: &Call) -> Result<Value> {
        self.arg(call, call.name())
    }

    /// Variadic argument: `{"add": [1, 2]}` gives `[1, 2]`; a non-array gives one element.
    /// When the argument is written as an array literal, each element is evaluated on its
    /// own so errors point at it.
    pub fn varargs(&mut self, call: &Call, key: &str) -> Result<Vec<Value>> {
        match call.get(key) {
            Some(Expr::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.eval(item).map_err(|e| e.at(i).at(key_static(call, key)))?);
                }
                Ok(out)
            }
            Some(_) => match self.arg(call, key)? {
                Value::Array(items) => Ok(items),
                other => Ok(vec![other]),
            },
            None => Err(invalid_expression(format!("Function `{}` requires argument `{key}`.", call.name()))),
        }
    }

    /// Evaluate `key` and require a string.
    pub fn str_arg(&mut self, call: &Call, key: &str) -> Result<String> {
        match self.arg(call, key)? {
            Value::String(s) => Ok(s),
            other => Err(wrong_type("String", &other).at(key_static(call, key))),
        }
    }

    /// Evaluate `key` and require an integer.
    pub fn long_arg(&mut self, call: &Call, key: &str) -> Result<i64> {
        match self.arg(call, key)? {
            Value::Long(n) => Ok(n),
            other => Err(wrong_type("Integer", &other).at(key_static(call, key))),
        }
    }

    /// Evaluate `key` and require a boolean.
    pub fn bool_arg(&mut self, call: &Call, key: &str) -> Result<bool> {
        match self.arg(call, key)? {
            Value::Bool(b) => Ok(b),
            other => Err(wrong_type("Boolean", &other).at(key_static(call, key))),
        }
    }

    // ---- variables and lambdas ----

    pub fn lookup(&self, name: &str) -> Option<&Value> {
        self.env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn push_var(&mut self, name: Key, v: Value) {
        self.env.push((name, v));
    }

    pub fn env_len(&self) -> usize {
        self.env.len()
    }

    pub fn truncate_env(&mut self, len: usize) {
        self.env.truncate(len);
    }

    /// Run `f` with an empty variable environment (UDF bodies do not see the caller's
    /// variables), restoring it afterwards.
    pub fn with_fresh_env<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let saved = std::mem::take(&mut self.env);
        let r = f(self);
        self.env = saved;
        r
    }

    /// The lambda passed as argument `key`: written in place, or a `Query` value.
    pub fn lambda_arg(&mut self, call: &Call, key: &str) -> Result<Lambda> {
        match call.get(key) {
            Some(Expr::Call(c)) if c.name() == "lambda" => lambda_from_call(c).map_err(|e| e.at(key_static(call, key))),
            Some(_) => {
                let v = self.arg(call, key)?;
                self.lambda_from_value(&v).map_err(|e| e.at(key_static(call, key)))
            }
            None => Err(invalid_expression(format!("Function `{}` requires a lambda as `{key}`.", call.name()))),
        }
    }

    pub fn lambda_from_value(&mut self, v: &Value) -> Result<Lambda> {
        match v {
            Value::Query(body) => {
                let e = crate::expr::parse_value(body)?;
                match e {
                    Expr::Call(c) if c.name() == "lambda" => {
                        let mut l = lambda_from_call(&c)?;
                        l.literal = false;
                        Ok(l)
                    }
                    _ => Err(invalid_argument("Lambda expected, the Query does not hold a Lambda.")),
                }
            }
            other => Err(wrong_type("Lambda", other)),
        }
    }

    /// Apply a lambda to arguments (one value per parameter, or one array to destructure).
    pub fn apply(&mut self, lam: &Lambda, args: Vec<Value>) -> Result<Value> {
        if self.call_depth >= self.limits.call_depth_max {
            return Err(FqlError::new(
                code::STACK_OVERFLOW,
                format!(
                    "Lambda/function calls nested deeper than {}; check for unbounded recursion.",
                    self.limits.call_depth_max
                ),
            ));
        }
        let mark = self.env.len();
        match &lam.params {
            Params::One(name) => {
                let v =
                    if args.len() == 1 { args.into_iter().next().unwrap_or(Value::Null) } else { Value::Array(args) };
                if name != "_" {
                    self.env.push((Key::from(name.as_str()), v));
                }
            }
            Params::Many(names) => {
                let vals = if args.len() == names.len() {
                    args
                } else if args.len() == 1 {
                    match args.into_iter().next() {
                        Some(Value::Array(items)) if items.len() == names.len() => items,
                        Some(Value::Array(items)) => {
                            return Err(invalid_argument(format!(
                                "Lambda expects an array with {} elements. Array contains {}.",
                                names.len(),
                                items.len()
                            )))
                        }
                        Some(other) => return Err(wrong_type("Array", &other)),
                        None => Vec::new(),
                    }
                } else {
                    return Err(invalid_argument(format!(
                        "Lambda expects {} arguments, {} given.",
                        names.len(),
                        args.len()
                    )));
                };
                for (n, v) in names.iter().zip(vals) {
                    if n != "_" {
                        self.env.push((Key::from(n.as_str()), v));
                    }
                }
            }
        }
        self.call_depth += 1;
        // What the body charged is dropped when it returns, except its result.
        let mem_mark = self.budget.used();
        let r = self.eval(&lam.body).and_then(|v| {
            self.budget.reset(mem_mark);
            self.mem_charge(crate::budget::deep_size(&v))?;
            Ok(v)
        });
        self.call_depth -= 1;
        self.env.truncate(mark);
        if lam.literal {
            r.map_err(|e| e.at("expr"))
        } else {
            r
        }
    }

    /// [`Eval::apply`] for a result the caller only looks at and drops (a predicate, a
    /// `Foreach` body, an index binding): nothing it built stays charged.
    pub fn apply_transient(&mut self, lam: &Lambda, args: Vec<Value>) -> Result<Value> {
        let mark = self.budget.used();
        let r = self.apply(lam, args);
        self.budget.reset(mark);
        r
    }

    pub fn call_depth(&self) -> u32 {
        self.call_depth
    }
}

/// The values of an array's literal elements (those [`Eval::lit_array_exprs`] returns are
/// all literals).
pub fn lit_values(items: &[Expr]) -> impl Iterator<Item = &Value> {
    items.iter().filter_map(|e| if let Expr::Lit(v) = e { Some(v) } else { None })
}

/// Keys in positions are `'static` in `Call`; map a borrowed key back to it.
fn key_static(call: &Call, key: &str) -> &'static str {
    call.args.iter().find(|(k, _)| *k == key).map(|(k, _)| *k).unwrap_or(call.spec.name)
}

pub fn lambda_from_call(c: &Call) -> Result<Lambda> {
    let params = match c.primary() {
        Expr::Lit(Value::String(s)) => Params::One(s.clone()),
        Expr::Array(items) => {
            let mut names = Vec::with_capacity(items.len());
            for it in items {
                match it {
                    Expr::Lit(Value::String(s)) => names.push(s.clone()),
                    _ => return Err(invalid_expression("Lambda parameters must be strings.").at("lambda")),
                }
            }
            Params::Many(names)
        }
        _ => return Err(invalid_expression("Lambda parameters must be a string or an array of strings.").at("lambda")),
    };
    let body = c.get("expr").cloned().ok_or_else(|| invalid_expression("Lambda requires `expr`."))?;
    Ok(Lambda { params, body: Rc::new(body), literal: true })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tally_storage::{MemStore, Store};

    use super::*;

    /// What an evaluation has charged, for comparing two evaluations.
    fn charged(ev: &Eval<'_>) -> (u64, u64, u64, u64, bool) {
        (ev.steps, ev.built, ev.read_charged, ev.budget.used(), ev.work_stopped)
    }

    /// [`Eval::with_arg`] against [`Eval::arg`] on the same state: the same value or
    /// error (with its position), the same steps and charges, at every step limit and
    /// memory budget around what the argument needs, for literals, variables (a whole
    /// document, a missing one) and other expressions.
    #[test]
    fn an_argument_seen_in_place_costs_what_evaluating_it_costs() {
        let store = MemStore::new();
        let snap = store.snapshot().unwrap();
        let doc = tally_value::from_json(&json!({"data": {"balance": 10, "note": "x".repeat(300)}, "ts": 1})).unwrap();
        let calls = [
            json!({"select": ["data", "balance"], "from": {"var": "doc"}}),
            json!({"select": ["data"], "from": {"var": "missing"}}),
            json!({"select": "balance", "from": {"object": {"balance": 3}}}),
            json!({"select": ["data", 0], "from": ["a", "b"]}),
            json!({"select": ["a"], "from": {"add": [1, 2]}}),
            json!({"select": ["a"], "from": {"var": {"concat": ["d", "oc"]}}}),
        ];
        for q in calls {
            let Expr::Call(call) = crate::expr::parse(&q).unwrap() else { panic!("{q}") };
            for key in ["select", "from"] {
                for steps_max in [0, 1, 2, 3, 4, 100] {
                    for bytes_max in [0, 8, 64, 300, 400, 1 << 20] {
                        let fresh = || {
                            let mut ev = Eval::new(Tx::new(&*snap, 1), Mode::Write, Auth::root_admin());
                            ev.limits.steps_max = steps_max;
                            ev.budget = crate::budget::Budget::new(bytes_max);
                            ev.env.push(("doc".into(), doc.clone()));
                            // Reads since the last charge: a `var` result settles them.
                            ev.tx.bytes_read = 40;
                            ev
                        };
                        let (mut seen, mut evaluated) = (fresh(), fresh());
                        let got = seen.with_arg(&call, key, |v| v.clone());
                        let want = evaluated.arg(&call, key);
                        let case = format!("{q} {key} steps {steps_max} bytes {bytes_max}");
                        assert_eq!(format!("{got:?}"), format!("{want:?}"), "{case}");
                        assert_eq!(charged(&seen), charged(&evaluated), "{case}");
                    }
                }
            }
        }
    }

    /// [`Eval::lit_array_arg`] against [`Eval::arg`] on the same state: an array of
    /// literals gives the same elements or error (with its position) after the same steps
    /// and charges, at every step limit and memory budget around what it needs; anything
    /// else gives None and charges nothing.
    #[test]
    fn a_literal_array_read_in_place_costs_what_building_it_costs() {
        let store = MemStore::new();
        let snap = store.snapshot().unwrap();
        let long = "x".repeat(300);
        let calls = [
            (json!({"select": ["data", "balance"], "from": 1}), true),
            (json!({"select": ["data", 0, null, long], "from": 1}), true),
            (json!({"select": [], "from": 1}), true),
            (json!({"select": "data", "from": 1}), false),
            (json!({"select": ["data", {"concat": ["b", "alance"]}], "from": 1}), false),
            (json!({"select": ["data", ["nested"]], "from": 1}), false),
        ];
        for (q, literal) in calls {
            let Expr::Call(call) = crate::expr::parse(&q).unwrap() else { panic!("{q}") };
            for steps_max in [0, 1, 2, 3, 4, 5, 100] {
                for bytes_max in [0, 8, 40, 64, 100, 400, 1 << 20] {
                    let fresh = || {
                        let mut ev = Eval::new(Tx::new(&*snap, 1), Mode::Write, Auth::root_admin());
                        ev.limits.steps_max = steps_max;
                        ev.budget = crate::budget::Budget::new(bytes_max);
                        ev.next_unused = true;
                        ev
                    };
                    let case = format!("{q} steps {steps_max} bytes {bytes_max}");
                    let (mut seen, mut evaluated) = (fresh(), fresh());
                    let got = seen.lit_array_arg(&call, "select").map(|o| o.map(|it| it.cloned().collect::<Vec<_>>()));
                    if !literal {
                        assert!(matches!(got, Ok(None)), "{case}");
                        assert_eq!(charged(&seen), charged(&fresh()), "{case}");
                        continue;
                    }
                    let got = got.map(|o| Value::Array(o.expect("a literal array")));
                    let want = evaluated.arg(&call, "select");
                    assert_eq!(format!("{got:?}"), format!("{want:?}"), "{case}");
                    assert_eq!(charged(&seen), charged(&evaluated), "{case}");
                    assert_eq!(seen.next_unused, evaluated.next_unused, "{case}");
                }
            }
        }
    }
}
