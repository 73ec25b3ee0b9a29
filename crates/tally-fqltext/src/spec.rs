//! Every function the JavaScript driver (faunadb 4.8) exports from `q`: its name, its
//! arguments in call order with the wire key each becomes, and what happens to an optional
//! argument that is left out or `null`. Parsing and printing both read this table.

/// What the driver does with one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Required.
    Req,
    /// Optional; sent when given, even as `null` (e.g. `Select`'s default).
    Keep,
    /// Optional; left out when not given or `null` (the driver's `params(...)`).
    Drop,
    /// Optional; `null` when not given (e.g. `Collections()` is `{"collections": null}`).
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Arguments map one to one onto `args`.
    Plain,
    /// No arguments; the key carries `null` (`Now()` is `{"now": null}`).
    Nullary,
    /// One or more arguments under one key: the argument itself when there is one, else an
    /// array (`Add(1)` is `{"add": 1}`, `Add(1, 2)` is `{"add": [1, 2]}`).
    Varargs,
    /// One or more arguments under one key, always as an array (`Do(1)` is `{"do": [1]}`).
    ArrayArgs,
    /// A first argument, then any number under a second key, as for `Varargs` but with no
    /// arguments an empty array (`Match(i)` is `{"match": i, "terms": []}`).
    LeadVarargs,
    Ref,
    Bytes,
    Let,
    Lambda,
    Paginate,
    Object,
}

#[derive(Debug)]
pub(crate) struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    /// In call order. For `Map`, `Foreach` and `Filter` the wire puts the second first
    /// (`wire_first`).
    pub args: &'static [(&'static str, Mode)],
    pub wire_first: usize,
}

impl Spec {
    pub(crate) fn min(&self) -> usize {
        match self.kind {
            Kind::Nullary => 0,
            Kind::Varargs | Kind::ArrayArgs | Kind::LeadVarargs | Kind::Ref | Kind::Lambda | Kind::Paginate => 1,
            _ => self.args.iter().filter(|(_, m)| *m == Mode::Req).count(),
        }
    }

    /// `None`: no upper bound.
    pub(crate) fn max(&self) -> Option<usize> {
        match self.kind {
            Kind::Nullary => Some(0),
            Kind::Varargs | Kind::ArrayArgs | Kind::LeadVarargs => None,
            Kind::Ref | Kind::Lambda | Kind::Paginate => Some(2),
            _ => Some(self.args.len()),
        }
    }

    /// The key that names the call on the wire.
    pub(crate) fn key(&self) -> &'static str {
        self.args[self.wire_first].0
    }
}

pub(crate) fn lookup(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// The table entry whose wire form an object with these keys is, if any.
pub(crate) fn by_keys<'k>(keys: impl Iterator<Item = &'k str> + Clone) -> Option<&'static Spec> {
    SPECS.iter().find(|s| {
        matches!(s.kind, Kind::Plain | Kind::Nullary | Kind::Varargs | Kind::ArrayArgs | Kind::LeadVarargs)
            && keys.clone().any(|k| k == s.key())
            && keys.clone().all(|k| s.args.iter().any(|(a, _)| *a == k))
            && s.args.iter().all(|(a, m)| *m != Mode::Req || keys.clone().any(|k| k == *a))
    })
}

use Kind::*;
use Mode::*;

const fn plain(name: &'static str, args: &'static [(&'static str, Mode)]) -> Spec {
    Spec { name, kind: Plain, args, wire_first: 0 }
}

const fn one(name: &'static str, key: &'static [(&'static str, Mode)]) -> Spec {
    plain(name, key)
}

const fn var(name: &'static str, key: &'static [(&'static str, Mode)]) -> Spec {
    Spec { name, kind: Varargs, args: key, wire_first: 0 }
}

const fn nullary(name: &'static str, key: &'static [(&'static str, Mode)]) -> Spec {
    Spec { name, kind: Nullary, args: key, wire_first: 0 }
}

const fn special(name: &'static str, kind: Kind, args: &'static [(&'static str, Mode)]) -> Spec {
    Spec { name, kind, args, wire_first: 0 }
}

const fn lambda_last(name: &'static str, args: &'static [(&'static str, Mode)]) -> Spec {
    Spec { name, kind: Plain, args, wire_first: 1 }
}

pub(crate) static SPECS: &[Spec] = &[
    special("Ref", Ref, &[("@ref", Req), ("id", Keep)]),
    special("Bytes", Bytes, &[("@bytes", Req)]),
    one("Abort", &[("abort", Req)]),
    plain("At", &[("at", Req), ("expr", Req)]),
    special("Let", Let, &[("let", Req), ("in", Req)]),
    one("Var", &[("var", Req)]),
    plain("If", &[("if", Req), ("then", Req), ("else", Req)]),
    Spec { name: "Do", kind: ArrayArgs, args: &[("do", Req)], wire_first: 0 },
    special("Object", Object, &[("object", Req)]),
    special("Lambda", Lambda, &[("lambda", Req), ("expr", Req)]),
    Spec { name: "Call", kind: LeadVarargs, args: &[("call", Req), ("arguments", Req)], wire_first: 0 },
    one("Query", &[("query", Req)]),
    lambda_last("Map", &[("collection", Req), ("map", Req)]),
    lambda_last("Foreach", &[("collection", Req), ("foreach", Req)]),
    lambda_last("Filter", &[("collection", Req), ("filter", Req)]),
    plain("Take", &[("take", Req), ("collection", Req)]),
    plain("Drop", &[("drop", Req), ("collection", Req)]),
    plain("Prepend", &[("prepend", Req), ("collection", Req)]),
    plain("Append", &[("append", Req), ("collection", Req)]),
    one("IsEmpty", &[("is_empty", Req)]),
    one("IsNonEmpty", &[("is_nonempty", Req)]),
    one("IsNumber", &[("is_number", Req)]),
    one("IsDouble", &[("is_double", Req)]),
    one("IsInteger", &[("is_integer", Req)]),
    one("IsBoolean", &[("is_boolean", Req)]),
    one("IsNull", &[("is_null", Req)]),
    one("IsBytes", &[("is_bytes", Req)]),
    one("IsTimestamp", &[("is_timestamp", Req)]),
    one("IsDate", &[("is_date", Req)]),
    one("IsString", &[("is_string", Req)]),
    one("IsArray", &[("is_array", Req)]),
    one("IsObject", &[("is_object", Req)]),
    one("IsRef", &[("is_ref", Req)]),
    one("IsSet", &[("is_set", Req)]),
    one("IsDoc", &[("is_doc", Req)]),
    one("IsLambda", &[("is_lambda", Req)]),
    one("IsCollection", &[("is_collection", Req)]),
    one("IsDatabase", &[("is_database", Req)]),
    one("IsIndex", &[("is_index", Req)]),
    one("IsFunction", &[("is_function", Req)]),
    one("IsKey", &[("is_key", Req)]),
    one("IsToken", &[("is_token", Req)]),
    one("IsCredentials", &[("is_credentials", Req)]),
    one("IsRole", &[("is_role", Req)]),
    plain("Get", &[("get", Req), ("ts", Drop)]),
    one("KeyFromSecret", &[("key_from_secret", Req)]),
    plain("Reduce", &[("reduce", Req), ("initial", Req), ("collection", Req)]),
    special("Paginate", Paginate, &[("paginate", Req)]),
    plain("Exists", &[("exists", Req), ("ts", Drop)]),
    plain("Create", &[("create", Req), ("params", Keep)]),
    plain("Update", &[("update", Req), ("params", Req)]),
    plain("Replace", &[("replace", Req), ("params", Req)]),
    one("Delete", &[("delete", Req)]),
    plain("Insert", &[("insert", Req), ("ts", Req), ("action", Req), ("params", Req)]),
    plain("Remove", &[("remove", Req), ("ts", Req), ("action", Req)]),
    one("CreateClass", &[("create_class", Req)]),
    one("CreateCollection", &[("create_collection", Req)]),
    one("CreateDatabase", &[("create_database", Req)]),
    one("CreateIndex", &[("create_index", Req)]),
    one("CreateKey", &[("create_key", Req)]),
    one("CreateFunction", &[("create_function", Req)]),
    one("CreateRole", &[("create_role", Req)]),
    one("CreateAccessProvider", &[("create_access_provider", Req)]),
    one("Singleton", &[("singleton", Req)]),
    one("Events", &[("events", Req)]),
    Spec { name: "Match", kind: LeadVarargs, args: &[("match", Req), ("terms", Req)], wire_first: 0 },
    var("Union", &[("union", Req)]),
    plain("Merge", &[("merge", Req), ("with", Req), ("lambda", Drop)]),
    var("Intersection", &[("intersection", Req)]),
    var("Difference", &[("difference", Req)]),
    one("Distinct", &[("distinct", Req)]),
    plain("Join", &[("join", Req), ("with", Req)]),
    plain("Range", &[("range", Req), ("from", Req), ("to", Req)]),
    plain("Login", &[("login", Req), ("params", Req)]),
    one("Logout", &[("logout", Req)]),
    plain("Identify", &[("identify", Req), ("password", Req)]),
    nullary("Identity", &[("identity", Req)]),
    nullary("CurrentIdentity", &[("current_identity", Req)]),
    nullary("HasIdentity", &[("has_identity", Req)]),
    nullary("HasCurrentIdentity", &[("has_current_identity", Req)]),
    nullary("CurrentToken", &[("current_token", Req)]),
    nullary("HasCurrentToken", &[("has_current_token", Req)]),
    plain("Concat", &[("concat", Req), ("separator", Drop)]),
    plain("Casefold", &[("casefold", Req), ("normalizer", Drop)]),
    plain("ContainsStr", &[("containsstr", Req), ("search", Req)]),
    plain("ContainsStrRegex", &[("containsstrregex", Req), ("pattern", Req)]),
    plain("StartsWith", &[("startswith", Req), ("search", Req)]),
    plain("EndsWith", &[("endswith", Req), ("search", Req)]),
    plain("FindStr", &[("findstr", Req), ("find", Req), ("start", Drop)]),
    plain("FindStrRegex", &[("findstrregex", Req), ("pattern", Req), ("start", Drop), ("num_results", Drop)]),
    one("Length", &[("length", Req)]),
    one("LowerCase", &[("lowercase", Req)]),
    one("LTrim", &[("ltrim", Req)]),
    plain("NGram", &[("ngram", Req), ("min", Drop), ("max", Drop)]),
    plain("Repeat", &[("repeat", Req), ("number", Drop)]),
    plain("ReplaceStr", &[("replacestr", Req), ("find", Req), ("replace", Req)]),
    plain("ReplaceStrRegex", &[("replacestrregex", Req), ("pattern", Req), ("replace", Req), ("first", Drop)]),
    one("RegexEscape", &[("regexescape", Req)]),
    one("RTrim", &[("rtrim", Req)]),
    one("Space", &[("space", Req)]),
    plain("SubString", &[("substring", Req), ("start", Drop), ("length", Drop)]),
    one("TitleCase", &[("titlecase", Req)]),
    one("Trim", &[("trim", Req)]),
    one("UpperCase", &[("uppercase", Req)]),
    Spec { name: "Format", kind: LeadVarargs, args: &[("format", Req), ("values", Req)], wire_first: 0 },
    one("Time", &[("time", Req)]),
    plain("TimeAdd", &[("time_add", Req), ("offset", Req), ("unit", Req)]),
    plain("TimeSubtract", &[("time_subtract", Req), ("offset", Req), ("unit", Req)]),
    plain("TimeDiff", &[("time_diff", Req), ("other", Req), ("unit", Req)]),
    plain("Epoch", &[("epoch", Req), ("unit", Req)]),
    one("Date", &[("date", Req)]),
    nullary("Now", &[("now", Req)]),
    nullary("NextId", &[("next_id", Req)]),
    nullary("NewId", &[("new_id", Req)]),
    plain("Database", &[("database", Req), ("scope", Keep)]),
    plain("Index", &[("index", Req), ("scope", Keep)]),
    plain("Class", &[("class", Req), ("scope", Keep)]),
    plain("Collection", &[("collection", Req), ("scope", Keep)]),
    plain("Function", &[("function", Req), ("scope", Keep)]),
    plain("Role", &[("role", Req), ("scope", Drop)]),
    one("AccessProviders", &[("access_providers", Null)]),
    one("Classes", &[("classes", Null)]),
    one("Collections", &[("collections", Null)]),
    one("Databases", &[("databases", Null)]),
    one("Indexes", &[("indexes", Null)]),
    one("Functions", &[("functions", Null)]),
    one("Roles", &[("roles", Null)]),
    one("Keys", &[("keys", Null)]),
    one("Tokens", &[("tokens", Null)]),
    one("Credentials", &[("credentials", Null)]),
    var("Equals", &[("equals", Req)]),
    plain("Contains", &[("contains", Req), ("in", Req)]),
    plain("ContainsPath", &[("contains_path", Req), ("in", Req)]),
    plain("ContainsField", &[("contains_field", Req), ("in", Req)]),
    plain("ContainsValue", &[("contains_value", Req), ("in", Req)]),
    plain("Select", &[("select", Req), ("from", Req), ("default", Keep)]),
    plain("SelectAll", &[("select_all", Req), ("from", Req)]),
    one("Abs", &[("abs", Req)]),
    var("Add", &[("add", Req)]),
    var("BitAnd", &[("bitand", Req)]),
    one("BitNot", &[("bitnot", Req)]),
    var("BitOr", &[("bitor", Req)]),
    var("BitXor", &[("bitxor", Req)]),
    one("Ceil", &[("ceil", Req)]),
    var("Divide", &[("divide", Req)]),
    one("Floor", &[("floor", Req)]),
    var("Max", &[("max", Req)]),
    var("Min", &[("min", Req)]),
    var("Modulo", &[("modulo", Req)]),
    var("Multiply", &[("multiply", Req)]),
    plain("Round", &[("round", Req), ("precision", Drop)]),
    var("Subtract", &[("subtract", Req)]),
    one("Sign", &[("sign", Req)]),
    one("Sqrt", &[("sqrt", Req)]),
    plain("Trunc", &[("trunc", Req), ("precision", Drop)]),
    one("Count", &[("count", Req)]),
    one("Sum", &[("sum", Req)]),
    one("Mean", &[("mean", Req)]),
    one("Any", &[("any", Req)]),
    one("All", &[("all", Req)]),
    one("Acos", &[("acos", Req)]),
    one("Asin", &[("asin", Req)]),
    one("Atan", &[("atan", Req)]),
    one("Cos", &[("cos", Req)]),
    one("Cosh", &[("cosh", Req)]),
    one("Degrees", &[("degrees", Req)]),
    one("Exp", &[("exp", Req)]),
    plain("Hypot", &[("hypot", Req), ("b", Drop)]),
    one("Ln", &[("ln", Req)]),
    one("Log", &[("log", Req)]),
    plain("Pow", &[("pow", Req), ("exp", Drop)]),
    one("Radians", &[("radians", Req)]),
    one("Sin", &[("sin", Req)]),
    one("Sinh", &[("sinh", Req)]),
    one("Tan", &[("tan", Req)]),
    one("Tanh", &[("tanh", Req)]),
    var("LT", &[("lt", Req)]),
    var("LTE", &[("lte", Req)]),
    var("GT", &[("gt", Req)]),
    var("GTE", &[("gte", Req)]),
    var("And", &[("and", Req)]),
    var("Or", &[("or", Req)]),
    one("Not", &[("not", Req)]),
    one("ToString", &[("to_string", Req)]),
    one("ToNumber", &[("to_number", Req)]),
    one("ToObject", &[("to_object", Req)]),
    one("ToArray", &[("to_array", Req)]),
    one("ToDouble", &[("to_double", Req)]),
    one("ToInteger", &[("to_integer", Req)]),
    one("ToTime", &[("to_time", Req)]),
    one("ToSeconds", &[("to_seconds", Req)]),
    one("ToMillis", &[("to_millis", Req)]),
    one("ToMicros", &[("to_micros", Req)]),
    one("DayOfWeek", &[("day_of_week", Req)]),
    one("DayOfYear", &[("day_of_year", Req)]),
    one("DayOfMonth", &[("day_of_month", Req)]),
    one("Hour", &[("hour", Req)]),
    one("Minute", &[("minute", Req)]),
    one("Second", &[("second", Req)]),
    one("Month", &[("month", Req)]),
    one("Year", &[("year", Req)]),
    one("ToDate", &[("to_date", Req)]),
    plain("MoveDatabase", &[("move_database", Req), ("to", Req)]),
    one("Documents", &[("documents", Req)]),
    one("Reverse", &[("reverse", Req)]),
    one("AccessProvider", &[("access_provider", Req)]),
];
