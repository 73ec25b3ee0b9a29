//! The value model.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use compact_str::CompactString;

/// A point in time with nanosecond precision (FQL `Time`).
pub type Time = DateTime<Utc>;

pub use crate::object::Object;

/// Every value an FQL v4 expression can evaluate to.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    String(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Time(Time),
    Ref(Ref),
    /// A set reference; holds the set's expression (`{"match": ...}`, `{"union": ...}`, ...)
    /// as data, exactly as it renders inside `{"@set": ...}`.
    Set(Box<Value>),
    /// A query (lambda) value; holds the lambda expression as data, as inside `{"@query": ...}`.
    Query(Box<Value>),
    Array(Vec<Value>),
    Object(Object),
}

/// A reference to a document or schema object.
///
/// Native collections (`collections`, `indexes`, `databases`, `keys`, `functions`, `roles`,
/// `tokens`, `credentials`) are refs with neither `collection` nor `database`. A collection
/// is `{id: name, collection: Ref("collections")}`; a document is `{id, collection: <coll ref>}`.
/// `database` scopes a ref to a child database of the one the query runs in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ref {
    pub id: CompactString,
    pub collection: Option<Arc<Ref>>,
    pub database: Option<Arc<Ref>>,
}

pub const NATIVE_COLLECTIONS: &[&str] =
    &["collections", "indexes", "databases", "keys", "functions", "roles", "tokens", "credentials", "access_providers"];

impl Ref {
    /// A native collection such as `collections` or `keys`.
    pub fn native(id: &str) -> Ref {
        Ref { id: CompactString::new(id), collection: None, database: None }
    }

    /// A ref to the document `id` of the collection `collection`.
    pub fn doc(collection: Ref, id: impl Into<CompactString>) -> Ref {
        Ref { id: id.into(), collection: Some(Arc::new(collection)), database: None }
    }

    /// `Collection(name)`.
    pub fn collection(name: &str) -> Ref {
        Ref::doc(Ref::native("collections"), name)
    }

    pub fn with_database(mut self, db: Option<Ref>) -> Ref {
        self.database = db.map(Arc::new);
        self
    }

    /// True for refs like `Ref("collections")` that name a native collection.
    pub fn is_native_collection(&self) -> bool {
        self.collection.is_none() && NATIVE_COLLECTIONS.contains(&self.id.as_str())
    }

    /// The id of the class (collection) this ref lives in, if it is a document of a user
    /// collection: `Some("players")` for `Ref(Collection("players"), "1")`.
    pub fn user_collection_name(&self) -> Option<&str> {
        let c = self.collection.as_deref()?;
        match c.collection.as_deref() {
            Some(n) if n.collection.is_none() && n.id == "collections" => Some(&c.id),
            _ => None,
        }
    }

    /// The native collection this ref belongs to, if it is a schema document
    /// (`Some("collections")` for `Collection("players")`).
    pub fn native_parent(&self) -> Option<&str> {
        let c = self.collection.as_deref()?;
        if c.collection.is_none() && NATIVE_COLLECTIONS.contains(&c.id.as_str()) {
            Some(&c.id)
        } else {
            None
        }
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.collection.as_deref(), self.native_parent()) {
            (None, _) => {
                let name = match self.id.as_str() {
                    "collections" => "Collections",
                    "indexes" => "Indexes",
                    "databases" => "Databases",
                    "keys" => "Keys",
                    "functions" => "Functions",
                    "roles" => "Roles",
                    "tokens" => "Tokens",
                    "credentials" => "Credentials",
                    "access_providers" => "AccessProviders",
                    other => return write!(f, "Ref({other:?})"),
                };
                write!(f, "{name}()")
            }
            (Some(_), Some(native)) => {
                let ctor = match native {
                    "collections" => "Collection",
                    "indexes" => "Index",
                    "databases" => "Database",
                    "functions" => "Function",
                    "roles" => "Role",
                    "access_providers" => "AccessProvider",
                    _ => return write!(f, "Ref({native}(), {:?})", self.id),
                };
                write!(f, "{ctor}({:?})", self.id)
            }
            (Some(c), None) => write!(f, "Ref({c}, {:?})", self.id),
        }
    }
}

impl Value {
    /// The FQL type name used in error messages ("Long", "String", "Object", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "Null",
            Value::Bool(_) => "Boolean",
            Value::Long(_) => "Integer",
            Value::Double(_) => "Double",
            Value::String(_) => "String",
            Value::Bytes(_) => "Bytes",
            Value::Date(_) => "Date",
            Value::Time(_) => "Time",
            Value::Ref(_) => "Ref",
            Value::Set(_) => "Set",
            Value::Query(_) => "Lambda",
            Value::Array(_) => "Array",
            Value::Object(_) => "Object",
        }
    }

    pub fn str(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_long(&self) -> Option<i64> {
        match self {
            Value::Long(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_ref(&self) -> Option<&Ref> {
        match self {
            Value::Ref(r) => Some(r),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Nesting depth: 1 for scalars, 1 + the deepest element for arrays, objects, sets and
    /// queries.
    pub fn depth(&self) -> usize {
        match self {
            Value::Array(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Object(o) => 1 + o.values().map(Value::depth).max().unwrap_or(0),
            Value::Set(v) | Value::Query(v) => 1 + v.depth(),
            _ => 1,
        }
    }

    /// Field lookup on objects; `None` for anything else or a missing key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object().and_then(|o| o.get(key))
    }

    /// Build an object from `(key, value)` pairs.
    pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl From<Ref> for Value {
    fn from(r: Ref) -> Value {
        Value::Ref(r)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Long(n)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
