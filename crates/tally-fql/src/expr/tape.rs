//! A query's [`Tape`] to an [`Expr`]: [`super::from_text`]'s reading of the same text,
//! with plain loops over the tape instead of serde visitors (docs/benchmarks.md, "The
//! query read once into a tape").
//!
//! It takes what `from_text` takes and builds the same expression, and *declines*
//! (`None`) the rest, for the caller to parse the text as before (the tape declines
//! repeated keys, among others). The parts whose meaning depends on more than their own
//! text — a `query` argument, the inside of the special forms other than `@ref` — are
//! turned into small JSON trees, as serde_json builds them, and handed to the tree parser,
//! as `from_text` does.
//!
//! Architecture invariant: `Some(e)` only where `from_text` gives `Some(e)` for the same
//! text (`tally-exec` `tests/read_text.rs` compares the two over a corpus and random
//! documents).

use std::sync::Arc;

use tally_value::object::Key;
use tally_value::tape::{Node, Tape, Tok};
use tally_value::{Ref, Value};

use serde_json::Value as Json;

use super::{key_of, resolve_keys, Call, Expr, Parser, EXPR_NODES_MAX};

/// More keys than any function has: such an object cannot be a call.
const CALL_KEYS_MAX: usize = 32;

/// The expression of `tape`, or `None` (see the module doc).
pub fn from_tape(tape: &Tape<'_>) -> Option<Expr> {
    Builder { nodes: 0, refs: Vec::new() }.expr(tape.root())
}

struct Builder {
    /// Expressions so far, counted as the tree parser counts them.
    nodes: usize,
    /// The collection refs built so far, shared by the refs that name them again (a
    /// transfer names its accounts' collection six times): (its id, its collection).
    refs: Vec<Arc<Ref>>,
}

impl Builder {
    fn count(&mut self) -> Option<()> {
        self.nodes += 1;
        (self.nodes <= EXPR_NODES_MAX).then_some(())
    }

    /// An expression: `ExprSeed`.
    fn expr(&mut self, n: Node<'_, '_>) -> Option<Expr> {
        self.count()?;
        self.value(n)
    }

    /// `ExprVisitor`: what a value is as an expression, not counted here.
    fn value(&mut self, n: Node<'_, '_>) -> Option<Expr> {
        Some(match n.tok() {
            Tok::Null => Expr::Lit(Value::Null),
            Tok::Bool(b) => Expr::Lit(Value::Bool(b)),
            Tok::Long(i) => Expr::Lit(Value::Long(i)),
            // Above i64::MAX the tree parser's answer is an error.
            Tok::BigU64(_) => return None,
            Tok::Double(f) => Expr::Lit(Value::Double(f)),
            Tok::Str(s) => Expr::Lit(Value::String(s.to_owned())),
            Tok::Array { len, .. } => {
                let mut out = Vec::with_capacity(len as usize);
                for e in n.elements() {
                    out.push(self.expr(e)?);
                }
                Expr::Array(out)
            }
            Tok::Object { .. } => return self.map(n),
        })
    }

    fn map(&mut self, n: Node<'_, '_>) -> Option<Expr> {
        let mut entries = n.entries();
        let (first, v) = entries.next()?; // `{}` calls nothing: an error
        if first.starts_with('@') {
            // A special form is alone in its object.
            if entries.next().is_some() {
                return None;
            }
            let v = match first {
                "@ref" => Value::Ref(self.reference(v)?),
                // Rare in a query's text: the tree decoder reads the inside.
                "@ts" | "@date" | "@bytes" | "@set" | "@query" | "@obj" => {
                    let mut one = serde_json::Map::new();
                    one.insert(first.to_owned(), to_json(v)?);
                    tally_value::wire_special(&one).ok()??
                }
                _ => return None,
            };
            return Some(crate::fns::selfref::literal_expr(v));
        }
        self.object(n)
    }

    /// An object that is not a special form: an object literal or a call. The call is
    /// chosen from the keys first, and its arguments built straight into it.
    fn object(&mut self, n: Node<'_, '_>) -> Option<Expr> {
        let len = n.entries().len();
        if len > CALL_KEYS_MAX {
            return None;
        }
        let (first, v) = n.entries().next()?;
        if first == "object" {
            if let Tok::Object { .. } = v.tok() {
                // `{"object": {…}}` alone is an object literal; with other keys the
                // fields are no argument.
                if len != 1 {
                    return None;
                }
                return Some(Expr::Object(self.fields(v)?));
            }
        }
        // Most calls have at most four keys: those need no list of their own.
        let mut few = [""; 4];
        let many: Vec<&str>;
        let keys: &[&str] = if len <= few.len() {
            for (slot, (k, _)) in few.iter_mut().zip(n.entries()) {
                *slot = k;
            }
            &few[..len]
        } else {
            many = n.entries().map(|(k, _)| k).collect();
            &many
        };
        if keys.iter().any(|k| k.starts_with('@')) {
            return None;
        }
        let spec = resolve_keys(keys).ok()?;
        if spec.name == "query" {
            // As `Parser::call`: validated as an expression, kept as data.
            let (k, body) = n.entries().next()?;
            if len != 1 || k != "query" {
                return None;
            }
            let body = to_json(body)?;
            Parser { nodes: &mut self.nodes }.expr(&body).ok()?;
            let v = tally_value::query_body_from_json(&body).ok()?;
            return Some(Expr::Lit(Value::Query(Box::new(crate::fns::basic::with_api_version(v)))));
        }
        let mut args = Vec::with_capacity(len);
        for (k, v) in n.entries() {
            let key = key_of(spec, k);
            let e = if k == "query" {
                // A `query` argument of another function, parsed from its JSON tree.
                Parser { nodes: &mut self.nodes }.expr(&to_json(v)?).ok()?
            } else if k == "let" {
                // Bindings are an argument of `Let` only, under its `let` key.
                if !(spec.name == "let" && key == "let") {
                    return None;
                }
                self.bindings(v)?
            } else {
                self.expr(v)?
            };
            args.push((key, e));
        }
        Some(Expr::Call(Call { spec, args }))
    }

    /// An object literal's fields (not counted: the tree parser counts the
    /// `{"object": …}` around them). `@obj` may be an escape to the tree parser.
    fn fields(&mut self, n: Node<'_, '_>) -> Option<Vec<(Key, Expr)>> {
        let mut out = Vec::with_capacity(n.entries().len());
        for (k, v) in n.entries() {
            if k == "@obj" {
                return None;
            }
            out.push((Key::from(k), self.expr(v)?));
        }
        Some(out)
    }

    /// `Let` bindings: `[{"x": e1}, {"y": e2}]`, or the legacy `{"x": e1, "y": e2}`, as
    /// one-field objects in an array.
    fn bindings(&mut self, n: Node<'_, '_>) -> Option<Expr> {
        let mut out = Vec::new();
        match n.tok() {
            Tok::Array { .. } => {
                for item in n.elements() {
                    let Tok::Object { .. } = item.tok() else { return None };
                    out.extend(self.fields(item)?.into_iter().map(|f| Expr::Object(vec![f])));
                }
            }
            Tok::Object { .. } => out.extend(self.fields(n)?.into_iter().map(|f| Expr::Object(vec![f]))),
            _ => return None,
        }
        Some(Expr::Array(out))
    }

    /// The inside of `{"@ref": …}` in its object form with a string `id`: `id`, optional
    /// `collection` and `database` (null or a `{"@ref": …}`), other keys ignored.
    fn reference(&mut self, n: Node<'_, '_>) -> Option<Ref> {
        let Tok::Object { .. } = n.tok() else { return None };
        let (mut id, mut collection, mut database) = (None, None, None);
        for (k, v) in n.entries() {
            match k {
                "id" => {
                    let Tok::Str(s) = v.tok() else { return None };
                    id = Some(s);
                }
                "collection" => collection = self.sub_ref(v)?,
                "database" => database = self.sub_ref(v)?,
                _ => {}
            }
        }
        Some(Ref { id: id?.into(), collection, database })
    }

    /// `collection` or `database` inside a ref: null (none) or a one-key `{"@ref": …}`.
    fn sub_ref(&mut self, n: Node<'_, '_>) -> Option<Option<Arc<Ref>>> {
        match n.tok() {
            Tok::Null => return Some(None),
            Tok::Object { len: 1, .. } => {}
            _ => return None,
        }
        let (k, v) = n.entries().next()?;
        if k != "@ref" {
            return None;
        }
        let r = self.reference(v)?;
        // One shared copy of each distinct ref named inside refs (a few per query).
        if let Some(same) = self.refs.iter().find(|s| ***s == r) {
            return Some(Some(same.clone()));
        }
        let r = Arc::new(r);
        if self.refs.len() < 8 {
            self.refs.push(r.clone());
        }
        Some(Some(r))
    }
}

/// A tape's value as the JSON tree serde_json builds for the same text (the tape holds no
/// repeated key, so every object keeps its text's order).
fn to_json(n: Node<'_, '_>) -> Option<Json> {
    Some(match n.tok() {
        Tok::Null => Json::Null,
        Tok::Bool(b) => Json::Bool(b),
        Tok::Long(i) => Json::from(i),
        Tok::BigU64(u) => Json::from(u),
        Tok::Double(f) => Json::Number(serde_json::Number::from_f64(f)?),
        Tok::Str(s) => Json::String(s.to_owned()),
        Tok::Array { .. } => Json::Array(n.elements().map(to_json).collect::<Option<_>>()?),
        Tok::Object { .. } => {
            let mut m = serde_json::Map::new();
            for (k, v) in n.entries() {
                m.insert(k.to_owned(), to_json(v)?);
            }
            Json::Object(m)
        }
    })
}
