//! FQL errors: the `{code, description, position}` objects a client sees.

use serde_json::{json, Value as Json};

/// One step of an error position: an object key or an array index of the query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Seg {
        Seg::Key(s.to_string())
    }
}
impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

/// A field-level validation failure (inside `validation failed`).
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub field: Vec<String>,
    pub code: &'static str,
    pub description: String,
}

/// Stable machine-readable error codes, exactly as FQL v4 spells them.
pub mod code {
    pub const INVALID_EXPRESSION: &str = "invalid expression";
    pub const INVALID_ARGUMENT: &str = "invalid argument";
    pub const INSTANCE_NOT_FOUND: &str = "instance not found";
    pub const INSTANCE_ALREADY_EXISTS: &str = "instance already exists";
    pub const INSTANCE_NOT_UNIQUE: &str = "instance not unique";
    pub const PERMISSION_DENIED: &str = "permission denied";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const CALL_ERROR: &str = "call error";
    pub const TRANSACTION_ABORTED: &str = "transaction aborted";
    pub const VALIDATION_FAILED: &str = "validation failed";
    pub const VALUE_NOT_FOUND: &str = "value not found";
    pub const INVALID_REF: &str = "invalid ref";
    pub const BAD_REQUEST: &str = "bad request";
    pub const INVALID_WRITE_TIME: &str = "invalid write time";
    pub const STACK_OVERFLOW: &str = "stack overflow";
    pub const TIME_OUT: &str = "time out";
    pub const INTERNAL_ERROR: &str = "internal server error";
    pub const FEATURE_NOT_AVAILABLE: &str = "feature not available";
    pub const MISSING_IDENTITY: &str = "missing identity";
    pub const INVALID_TOKEN: &str = "invalid token";
    pub const UNAVAILABLE: &str = "unavailable";
}

/// How many levels of `cause` an error renders.
pub const CAUSE_DEPTH_MAX: usize = 8;

/// An FQL error: one pointer, its [`ErrorBody`] boxed. Nearly every evaluation function
/// returns `Result<Value, FqlError>`; with the body inline that result was 120 bytes, moved
/// through every `?` of the evaluator though errors are rare, and with it boxed it is the
/// size of a `Value`. The body's fields are reached through `Deref`.
#[derive(Clone, PartialEq)]
pub struct FqlError(Box<ErrorBody>);

impl std::ops::Deref for FqlError {
    type Target = ErrorBody;
    fn deref(&self) -> &ErrorBody {
        &self.0
    }
}

impl std::ops::DerefMut for FqlError {
    fn deref_mut(&mut self) -> &mut ErrorBody {
        &mut self.0
    }
}

impl std::fmt::Debug for FqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &*self.0;
        f.debug_struct("FqlError")
            .field("code", &b.code)
            .field("description", &b.description)
            .field("rev_position", &b.rev_position)
            .field("failures", &b.failures)
            .field("cause", &b.cause)
            .field("needs_write", &b.needs_write)
            .finish()
    }
}

/// What an [`FqlError`] says.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorBody {
    pub code: &'static str,
    pub description: String,
    /// Position in the query, stored innermost-first (segments are pushed while unwinding).
    pub rev_position: Vec<Seg>,
    pub failures: Vec<Failure>,
    pub cause: Vec<FqlError>,
    /// Not a client error: a read-only evaluation reached a write and must be re-run
    /// through the transaction log.
    pub needs_write: bool,
}

pub type Result<T, E = FqlError> = std::result::Result<T, E>;

impl FqlError {
    pub fn new(code: &'static str, description: impl Into<String>) -> FqlError {
        FqlError(Box::new(ErrorBody {
            code,
            description: description.into(),
            rev_position: Vec::new(),
            failures: Vec::new(),
            cause: Vec::new(),
            needs_write: false,
        }))
    }

    /// The error's description, taken out of it.
    pub fn into_description(self) -> String {
        self.0.description
    }

    /// Prepend one segment to the position (called while unwinding out of a sub-expression).
    pub fn at(mut self, seg: impl Into<Seg>) -> FqlError {
        self.rev_position.push(seg.into());
        self
    }

    pub fn needs_write() -> FqlError {
        let mut e = FqlError::new(code::INTERNAL_ERROR, "read-only evaluation reached a write");
        e.needs_write = true;
        e
    }

    pub fn position(&self) -> Vec<Seg> {
        self.rev_position.iter().rev().cloned().collect()
    }

    /// The HTTP status the drivers map this error to.
    pub fn http_status(&self) -> u16 {
        match self.code {
            code::UNAUTHORIZED | code::INVALID_TOKEN => 401,
            code::PERMISSION_DENIED => 403,
            code::INSTANCE_NOT_FOUND | code::VALUE_NOT_FOUND => 404,
            "contended transaction" => 409,
            code::TIME_OUT => 503,
            code::UNAVAILABLE => 503,
            code::INTERNAL_ERROR => 500,
            _ => 400,
        }
    }

    pub fn to_json(&self) -> Json {
        self.to_json_depth(0)
    }

    /// Render at most [`CAUSE_DEPTH_MAX`] levels of nested causes (deep recursion through
    /// user functions would otherwise nest hundreds of levels).
    fn to_json_depth(&self, depth: usize) -> Json {
        let pos: Vec<Json> = self
            .position()
            .into_iter()
            .map(|s| match s {
                Seg::Key(k) => Json::String(k),
                Seg::Index(i) => json!(i),
            })
            .collect();
        let mut o = serde_json::Map::new();
        // Authentication failures happen before there is a query to point into.
        if self.code != code::UNAUTHORIZED {
            o.insert("position".into(), Json::Array(pos));
        }
        o.insert("code".into(), Json::String(self.code.to_string()));
        o.insert("description".into(), Json::String(self.description.clone()));
        if !self.failures.is_empty() {
            let f: Vec<Json> = self
                .failures
                .iter()
                .map(|f| json!({"field": f.field, "code": f.code, "description": f.description}))
                .collect();
            o.insert("failures".into(), Json::Array(f));
        }
        if !self.cause.is_empty() && depth < CAUSE_DEPTH_MAX {
            o.insert("cause".into(), Json::Array(self.cause.iter().map(|c| c.to_json_depth(depth + 1)).collect()));
        }
        Json::Object(o)
    }
}

// Shorthands used throughout the function modules.
pub fn invalid_argument(description: impl Into<String>) -> FqlError {
    FqlError::new(code::INVALID_ARGUMENT, description)
}
pub fn invalid_expression(description: impl Into<String>) -> FqlError {
    FqlError::new(code::INVALID_EXPRESSION, description)
}
pub fn not_found(description: impl Into<String>) -> FqlError {
    FqlError::new(code::INSTANCE_NOT_FOUND, description)
}
pub fn permission_denied() -> FqlError {
    FqlError::new(code::PERMISSION_DENIED, "Insufficient privileges to perform the action.")
}
/// `invalid argument` for a value of the wrong type: "Integer expected, String provided."
pub fn wrong_type(expected: &str, got: &tally_value::Value) -> FqlError {
    invalid_argument(format!("{expected} expected, {} provided.", got.type_name()))
}
