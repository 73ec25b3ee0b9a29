//! String functions: `concat casefold containsstr containsstrregex endswith findstr
//! findstrregex length lowercase ltrim ngram regexescape repeat replacestr
//! replacestrregex rtrim space startswith substring titlecase trim uppercase format`.
//!
//! Positions and lengths count Unicode code points, as v4 does. Regular expressions use
//! Java syntax on the wire (v4 runs on the JVM); they are translated to the `regex`
//! crate's syntax (`\Q...\E` quoting, Java replacement strings) and compiled with a size
//! limit. Java features the crate lacks (look-around, back-references, possessive
//! quantifiers) are rejected as `invalid argument`.

use regex::{Regex, RegexBuilder};
use tally_value::{Object, Value};

use crate::error::{invalid_argument, wrong_type, FqlError, Result};
use crate::eval::Eval;
use crate::expr::{Call, Expr, FnSpec};
use crate::fns::math::decimal_round;
use crate::fns::types::{java_double, scalar_string};

pub(crate) static SPECS: &[FnSpec] = &[
    FnSpec { name: "concat", optional: &["separator"], required: &[], handler: concat },
    FnSpec { name: "casefold", optional: &["normalizer"], required: &[], handler: casefold },
    FnSpec { name: "containsstr", optional: &[], required: &["search"], handler: contains_str },
    FnSpec { name: "containsstrregex", optional: &[], required: &["pattern"], handler: contains_str_regex },
    FnSpec { name: "startswith", optional: &[], required: &["search"], handler: starts_with },
    FnSpec { name: "endswith", optional: &[], required: &["search"], handler: ends_with },
    FnSpec { name: "findstr", optional: &["start"], required: &["find"], handler: find_str },
    FnSpec {
        name: "findstrregex",
        optional: &["start", "num_results"],
        required: &["pattern"],
        handler: find_str_regex,
    },
    FnSpec { name: "length", optional: &[], required: &[], handler: length },
    FnSpec { name: "lowercase", optional: &[], required: &[], handler: lowercase },
    FnSpec { name: "uppercase", optional: &[], required: &[], handler: uppercase },
    FnSpec { name: "titlecase", optional: &[], required: &[], handler: titlecase },
    FnSpec { name: "trim", optional: &[], required: &[], handler: trim },
    FnSpec { name: "ltrim", optional: &[], required: &[], handler: ltrim },
    FnSpec { name: "rtrim", optional: &[], required: &[], handler: rtrim },
    FnSpec { name: "ngram", optional: &["min", "max"], required: &[], handler: ngram },
    FnSpec { name: "regexescape", optional: &[], required: &[], handler: regex_escape },
    FnSpec { name: "repeat", optional: &["number"], required: &[], handler: repeat },
    FnSpec { name: "replacestr", optional: &[], required: &["find", "replace"], handler: replace_str },
    FnSpec {
        name: "replacestrregex",
        optional: &["first"],
        required: &["pattern", "replace"],
        handler: replace_str_regex,
    },
    FnSpec { name: "space", optional: &[], required: &[], handler: space },
    FnSpec { name: "substring", optional: &["start", "length"], required: &[], handler: substring },
    FnSpec { name: "format", optional: &["values"], required: &[], handler: format },
];

/// Largest string any string function builds (bytes).
pub(crate) const STRING_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Compiled-program size limit for regular expressions (bytes).
const REGEX_SIZE_MAX: usize = 1 << 20;
/// Longest regular expression accepted (bytes).
const REGEX_PATTERN_MAX: usize = 16 * 1024;

fn too_long(name: &str) -> FqlError {
    invalid_argument(format!("The result of `{name}` would exceed {STRING_BYTES_MAX} bytes.")).at(name)
}

fn check_len(name: &str, len: usize) -> Result<()> {
    if len > STRING_BYTES_MAX {
        Err(too_long(name))
    } else {
        Ok(())
    }
}

fn str_primary(ev: &mut Eval<'_>, call: &Call) -> Result<String> {
    ev.str_arg(call, call.name())
}

fn opt_long(ev: &mut Eval<'_>, call: &Call, key: &'static str) -> Result<Option<i64>> {
    match ev.opt_arg(call, key)? {
        None => Ok(None),
        Some(Value::Long(n)) => Ok(Some(n)),
        Some(other) => Err(wrong_type("Integer", &other).at(key)),
    }
}

fn cp_len(s: &str) -> usize {
    s.chars().count()
}

/// Byte offset of code point `cp` (clamped to the end).
fn byte_at(s: &str, cp: usize) -> usize {
    s.char_indices().nth(cp).map(|(b, _)| b).unwrap_or(s.len())
}

// ---- regular expressions ----

/// Translate a Java regular expression into the `regex` crate's syntax: `\Q...\E`
/// quoted sections become escaped literals; everything else passes through.
fn java_regex(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut rest = pattern;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.chars().next() {
            Some('Q') => {
                let body = &after[1..];
                let (lit, next) = match body.find("\\E") {
                    Some(j) => (&body[..j], &body[j + 2..]),
                    None => (body, ""),
                };
                out.push_str(&regex::escape(lit));
                rest = next;
            }
            Some(c) => {
                out.push('\\');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
            None => {
                out.push('\\');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn compile(pattern: &str, key: &'static str) -> Result<Regex> {
    if pattern.len() > REGEX_PATTERN_MAX {
        return Err(invalid_argument(format!("Regular expression longer than {REGEX_PATTERN_MAX} bytes.")).at(key));
    }
    RegexBuilder::new(&java_regex(pattern))
        .size_limit(REGEX_SIZE_MAX)
        .dfa_size_limit(REGEX_SIZE_MAX)
        .nest_limit(100)
        .build()
        .map_err(|e| {
            let detail = match e {
                regex::Error::CompiledTooBig(_) => {
                    "it compiles to a program that is too large; simplify it".to_string()
                }
                other => other.to_string().lines().last().unwrap_or("").trim().to_string(),
            };
            invalid_argument(format!("Invalid or unsupported regular expression {pattern:?}: {detail}.")).at(key)
        })
}

fn pattern_arg(ev: &mut Eval<'_>, call: &Call) -> Result<Regex> {
    let p = ev.str_arg(call, "pattern")?;
    compile(&p, "pattern")
}

/// One piece of a Java replacement string.
enum Piece {
    Lit(String),
    Group(usize),
    Named(String),
}

/// Parse a Java `Matcher.replaceAll` replacement: `$n`, `${name}`, `\x` escapes.
fn parse_replacement(r: &str, groups: usize) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(x) => lit.push(x),
                None => {
                    return Err(
                        invalid_argument("Replacement ends with a lone backslash; escape it as \\\\.").at("replace")
                    )
                }
            },
            '$' => {
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                match chars.peek().copied() {
                    Some('{') => {
                        chars.next();
                        let mut name = String::new();
                        loop {
                            match chars.next() {
                                Some('}') => break,
                                Some(x) => name.push(x),
                                None => {
                                    return Err(invalid_argument("Unclosed ${name} group reference in replacement.")
                                        .at("replace"))
                                }
                            }
                        }
                        out.push(Piece::Named(name));
                    }
                    Some(d) if d.is_ascii_digit() => {
                        chars.next();
                        let mut n = d as usize - '0' as usize;
                        // Java takes further digits while the number is still a valid group.
                        while let Some(&x) = chars.peek() {
                            let Some(dv) = x.to_digit(10) else { break };
                            let m = n * 10 + dv as usize;
                            if m >= groups {
                                break;
                            }
                            n = m;
                            chars.next();
                        }
                        if n >= groups {
                            return Err(invalid_argument(format!(
                                "Replacement refers to group {n}, which the pattern does not have."
                            ))
                            .at("replace"));
                        }
                        out.push(Piece::Group(n));
                    }
                    _ => {
                        return Err(invalid_argument(
                            "Illegal group reference in replacement; escape a literal $ as \\$.",
                        )
                        .at("replace"))
                    }
                }
            }
            other => lit.push(other),
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

// ---- handlers ----

fn concat(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let literal = matches!(call.get("concat"), Some(Expr::Array(_)));
    let parts = ev.varargs(call, "concat")?;
    let sep = match ev.opt_arg(call, "separator")? {
        None => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => return Err(wrong_type("String", &other).at("separator")),
    };
    // The result's size is known before it is built (`Eval::will_build`).
    let total = parts.iter().map(|p| if let Value::String(s) = p { s.len() + sep.len() } else { 0 }).sum::<usize>();
    ev.will_build(total as u64)?;
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        let Value::String(s) = p else {
            let e = wrong_type("String", p);
            return Err(if literal { e.at(i).at("concat") } else { e.at("concat") });
        };
        if i > 0 {
            out.push_str(&sep);
        }
        out.push_str(s);
        check_len("concat", out.len())?;
    }
    Ok(Value::String(out))
}

/// Full case folding, approximated by lowercasing plus the common multi-character folds.
fn case_fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            'ß' | 'ẞ' => out.push_str("ss"),
            'ς' => out.push('σ'),
            'ﬀ' => out.push_str("ff"),
            'ﬁ' => out.push_str("fi"),
            'ﬂ' => out.push_str("fl"),
            'ﬃ' => out.push_str("ffi"),
            'ﬄ' => out.push_str("ffl"),
            'ﬅ' | 'ﬆ' => out.push_str("st"),
            // Compatibility forms NFKC maps before folding.
            '\u{212B}' => out.push('å'),
            '\u{212A}' => out.push('k'),
            '\u{2126}' => out.push('ω'),
            '\u{00A0}' => out.push(' '),
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// Default-ignorable code points, which NFKC_Casefold removes.
fn default_ignorable(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

/// Unicode's NFKC_Casefold: compatibility-decompose, fold case, drop default
/// ignorables, recompose.
fn nfkc_casefold(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let decomposed: String = s.nfkd().filter(|c| !default_ignorable(*c)).collect();
    case_fold(&decomposed).nfkc().collect()
}

/// `Casefold(string, normalizer = "NFKCCaseFold")`. Only `NFKCCaseFold` folds case; the
/// other normalizers only normalize.
fn casefold(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    use unicode_normalization::UnicodeNormalization;
    let s = str_primary(ev, call)?;
    let norm = match ev.opt_arg(call, "normalizer")? {
        None => "NFKCCaseFold".to_string(),
        Some(Value::String(n)) => n,
        Some(other) => return Err(wrong_type("String", &other).at("normalizer")),
    };
    let out: String = match norm.as_str() {
        "NFKCCaseFold" => nfkc_casefold(&s),
        "NFC" => s.nfc().collect(),
        "NFD" => s.nfd().collect(),
        "NFKC" => s.nfkc().collect(),
        "NFKD" => s.nfkd().collect(),
        other => {
            return Err(invalid_argument(format!(
                "Unknown normalizer {other:?}; use one of NFD, NFC, NFKD, NFKC, NFKCCaseFold."
            ))
            .at("normalizer"))
        }
    };
    check_len("casefold", out.len())?;
    Ok(Value::String(out))
}

fn contains_str(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    let search = ev.str_arg(call, "search")?;
    Ok(Value::Bool(s.contains(&search)))
}

fn contains_str_regex(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    let re = pattern_arg(ev, call)?;
    Ok(Value::Bool(re.is_match(&s)))
}

fn starts_with(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    let search = ev.str_arg(call, "search")?;
    Ok(Value::Bool(s.starts_with(&search)))
}

fn ends_with(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    let search = ev.str_arg(call, "search")?;
    Ok(Value::Bool(s.ends_with(&search)))
}

fn start_arg(ev: &mut Eval<'_>, call: &Call) -> Result<usize> {
    match opt_long(ev, call, "start")? {
        None => Ok(0),
        Some(n) if n >= 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(_) => Err(invalid_argument("`start` must be zero or positive.").at("start")),
    }
}

/// `FindStr(value, find, start = 0)`: code point offset of the first match at or after
/// `start`, or -1.
fn find_str(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    let find = ev.str_arg(call, "find")?;
    let start = start_arg(ev, call)?;
    if start > cp_len(&s) {
        return Ok(Value::Long(-1));
    }
    let b = byte_at(&s, start);
    Ok(Value::Long(match s[b..].find(&find) {
        Some(i) => (start + cp_len(&s[b..b + i])) as i64,
        None => -1,
    }))
}

/// `FindStrRegex(value, pattern, start = 0, num_results = 1024)`: matches as
/// `{start, end, data}` with inclusive code point offsets.
fn find_str_regex(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    let re = pattern_arg(ev, call)?;
    let start = start_arg(ev, call)?;
    let limit = match opt_long(ev, call, "num_results")? {
        None => 1024,
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX).min(ev.limits.array_len_max),
        Some(_) => return Err(invalid_argument("`num_results` must be positive.").at("num_results")),
    };
    let mut out = Vec::new();
    if start > cp_len(&s) {
        return Ok(Value::Array(out));
    }
    let base = byte_at(&s, start);
    // Walk code point offsets incrementally.
    let mut cp = start;
    let mut at = base;
    for m in re.find_iter(&s[base..]) {
        if out.len() >= limit {
            break;
        }
        let (ms, me) = (base + m.start(), base + m.end());
        cp += cp_len(&s[at..ms]);
        at = ms;
        let len = cp_len(m.as_str()) as i64;
        let mut o = Object::new();
        o.insert("start".into(), Value::Long(cp as i64));
        o.insert("end".into(), Value::Long(cp as i64 + len - 1));
        o.insert("data".into(), Value::String(s[ms..me].to_string()));
        out.push(Value::Object(o));
    }
    Ok(Value::Array(out))
}

fn length(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    Ok(Value::Long(cp_len(&s) as i64))
}

fn lowercase(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    Ok(Value::String(str_primary(ev, call)?.to_lowercase()))
}

fn uppercase(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    Ok(Value::String(str_primary(ev, call)?.to_uppercase()))
}

/// Each whitespace-separated word: first letter upper case, the rest lower case.
fn titlecase(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_whitespace() {
            start = true;
            out.push(c);
        } else if start {
            start = false;
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
    Ok(Value::String(out))
}

fn trim(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    Ok(Value::String(str_primary(ev, call)?.trim().to_string()))
}

fn ltrim(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    Ok(Value::String(str_primary(ev, call)?.trim_start().to_string()))
}

fn rtrim(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    Ok(Value::String(str_primary(ev, call)?.trim_end().to_string()))
}

/// `NGram(terms, min = 1, max = 2)`: for each term, every substring of `min..=max` code
/// points, by start position then length.
fn ngram(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let literal = matches!(call.get("ngram"), Some(Expr::Array(_)));
    let terms = ev.varargs(call, "ngram")?;
    let min = opt_long(ev, call, "min")?.unwrap_or(1);
    let max = opt_long(ev, call, "max")?.unwrap_or(2);
    if min < 1 {
        return Err(invalid_argument("`min` must be at least 1.").at("min"));
    }
    if max < min {
        return Err(invalid_argument("`max` must be at least `min`.").at("max"));
    }
    let cap = ev.limits.array_len_max;
    let mut out = Vec::new();
    for (i, t) in terms.iter().enumerate() {
        let Value::String(s) = t else {
            let e = wrong_type("String", t);
            return Err(if literal { e.at(i).at("ngram") } else { e.at("ngram") });
        };
        let chars: Vec<char> = s.chars().collect();
        // Each start position gives up to `max - min + 1` grams, each a slot and its text.
        let per_start = (max - min).saturating_add(1).min(chars.len() as i64).max(0) as u64;
        let gram_bytes = (s.len() as u64).saturating_mul(per_start).saturating_add(chars.len() as u64 * per_start * 32);
        ev.will_build(gram_bytes)?;
        for start in 0..chars.len() {
            for n in min..=max {
                let Ok(n) = usize::try_from(n) else { break };
                let Some(end) = start.checked_add(n) else { break };
                if end > chars.len() {
                    break;
                }
                if out.len() >= cap {
                    return Err(invalid_argument(format!("NGram would produce more than {cap} elements.")).at("ngram"));
                }
                out.push(Value::String(chars[start..end].iter().collect()));
            }
        }
    }
    Ok(Value::Array(out))
}

/// Java's `Pattern.quote`.
fn quote(s: &str) -> String {
    let mut out = String::from("\\Q");
    let mut rest = s;
    while let Some(i) = rest.find("\\E") {
        out.push_str(&rest[..i]);
        out.push_str("\\E\\\\E\\Q");
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out.push_str("\\E");
    out
}

fn regex_escape(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    Ok(Value::String(quote(&str_primary(ev, call)?)))
}

fn repeat(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    let n = opt_long(ev, call, "number")?.unwrap_or(2);
    if n < 0 {
        return Err(invalid_argument("`number` must be zero or positive.").at("number"));
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    check_len("repeat", s.len().saturating_mul(n))?;
    ev.will_build(s.len().saturating_mul(n) as u64)?;
    Ok(Value::String(s.repeat(n)))
}

fn replace_str(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    let find = ev.str_arg(call, "find")?;
    let rep = ev.str_arg(call, "replace")?;
    let occurrences = if find.is_empty() { cp_len(&s) + 1 } else { s.matches(&find).count() };
    let len = s.len().saturating_add(occurrences.saturating_mul(rep.len()));
    check_len("replacestr", len)?;
    ev.will_build(len as u64)?;
    Ok(Value::String(s.replace(&find, &rep)))
}

/// `ReplaceStrRegex(value, pattern, replace, first = false)`; `replace` may use `$1`,
/// `${name}` and `\` escapes as in Java.
fn replace_str_regex(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    let re = pattern_arg(ev, call)?;
    let rep = ev.str_arg(call, "replace")?;
    let first = match ev.opt_arg(call, "first")? {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(other) => return Err(wrong_type("Boolean", &other).at("first")),
    };
    let pieces = parse_replacement(&rep, re.captures_len())?;
    for p in &pieces {
        if let Piece::Named(n) = p {
            if !re.capture_names().any(|x| x == Some(n.as_str())) {
                return Err(invalid_argument(format!(
                    "Replacement refers to group {n:?}, which the pattern does not have."
                ))
                .at("replace"));
            }
        }
    }
    // The result is at least the input's size (more with long replacements, checked as
    // it grows against the string limit).
    ev.will_build(s.len() as u64)?;
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for caps in re.captures_iter(&s) {
        let Some(m) = caps.get(0) else { continue };
        out.push_str(&s[last..m.start()]);
        for p in &pieces {
            match p {
                Piece::Lit(l) => out.push_str(l),
                Piece::Group(g) => out.push_str(caps.get(*g).map_or("", |x| x.as_str())),
                Piece::Named(n) => out.push_str(caps.name(n).map_or("", |x| x.as_str())),
            }
        }
        last = m.end();
        check_len("replacestrregex", out.len())?;
        if first {
            break;
        }
    }
    out.push_str(&s[last..]);
    check_len("replacestrregex", out.len())?;
    Ok(Value::String(out))
}

fn space(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let n = ev.long_arg(call, "space")?;
    if n < 0 {
        return Err(invalid_argument("The number of spaces must be zero or positive.").at("space"));
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    check_len("space", n)?;
    Ok(Value::String(" ".repeat(n)))
}

/// `SubString(value, start = 0, length?)`: a negative `start` counts from the end.
fn substring(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let s = str_primary(ev, call)?;
    let len = cp_len(&s) as i64;
    let start = opt_long(ev, call, "start")?.unwrap_or(0);
    let start = if start < 0 { (len + start).max(0) } else { start.min(len) };
    let count = match opt_long(ev, call, "length")? {
        None => len - start,
        Some(n) if n >= 0 => n.min(len - start),
        Some(_) => return Err(invalid_argument("`length` must be zero or positive.").at("length")),
    };
    let b0 = byte_at(&s, start as usize);
    let b1 = b0 + byte_at(&s[b0..], count as usize);
    Ok(Value::String(s[b0..b1].to_string()))
}

// ---- Format ----

/// The FQL representation of a value, as `%@` prints it.
pub(crate) fn fql_repr(v: &Value) -> String {
    let mut out = String::new();
    repr_into(v, &mut out);
    out
}

fn repr_into(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Long(n) => out.push_str(&n.to_string()),
        Value::Double(d) => out.push_str(&java_double(*d)),
        Value::String(s) => out.push_str(&serde_json::Value::String(s.clone()).to_string()),
        Value::Bytes(b) => out.push_str(&format!("Bytes({:?})", tally_value::encode_base64(b))),
        Value::Date(d) => out.push_str(&format!("Date(\"{}\")", d.format("%Y-%m-%d"))),
        Value::Time(t) => out.push_str(&format!("Time(\"{}\")", tally_value::format_time(t))),
        Value::Ref(r) => out.push_str(&r.to_string()),
        Value::Set(s) => out.push_str(&format!("SetRef({})", tally_value::to_json_string(s))),
        Value::Query(q) => out.push_str(&format!("Query({})", tally_value::to_json_string(q))),
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_into(x, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let plain = !k.is_empty()
                    && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if plain {
                    out.push_str(k);
                } else {
                    out.push_str(&serde_json::Value::String(k.to_string()).to_string());
                }
                out.push_str(": ");
                repr_into(x, out);
            }
            out.push('}');
        }
    }
}

fn format(ev: &mut Eval<'_>, call: &Call) -> Result<Value> {
    let fmt = str_primary(ev, call)?;
    let args = match call.get("values") {
        Some(_) => ev.varargs(call, "values")?,
        None => Vec::new(),
    };
    // At most the format, its values and a capped width of padding per specifier.
    let padding = fmt.matches('%').count() as u64 * FORMAT_WIDTH_MAX as u64;
    let values = args.iter().map(crate::budget::deep_size).sum::<u64>();
    ev.will_build((fmt.len() as u64).saturating_add(padding).saturating_add(values))?;
    let s = java_format(&fmt, &args).map_err(|e| e.at("format"))?;
    Ok(Value::String(s))
}

#[derive(Default, Clone, Copy)]
struct Flags {
    left: bool,
    alt: bool,
    plus: bool,
    space: bool,
    zero: bool,
    group: bool,
    paren: bool,
}

fn fmt_err(msg: impl Into<String>) -> FqlError {
    invalid_argument(msg)
}

/// Widest field `Format` pads to.
const FORMAT_WIDTH_MAX: usize = 4096;

/// Java's `String.format` over FQL values: `%[index$][flags][width][.precision]conv`.
pub(crate) fn java_format(fmt: &str, args: &[Value]) -> Result<String> {
    let chars: Vec<char> = fmt.chars().collect();
    let mut out = String::with_capacity(fmt.len());
    let mut i = 0;
    let mut ordinary = 0usize;
    let mut last: Option<usize> = None;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec_start = i - 1;
        // argument index: digits followed by '$', or '<'
        let mut explicit: Option<usize> = None;
        let mut relative = false;
        let save = i;
        let mut n = 0usize;
        let mut nd = 0;
        while i < chars.len() && chars[i].is_ascii_digit() {
            n = n.saturating_mul(10).saturating_add(chars[i] as usize - '0' as usize);
            i += 1;
            nd += 1;
        }
        if nd > 0 && i < chars.len() && chars[i] == '$' {
            if n == 0 {
                return Err(fmt_err("Format argument index must start at 1 (%1$s)."));
            }
            explicit = Some(n - 1);
            i += 1;
        } else {
            i = save;
        }
        let mut flags = Flags::default();
        while i < chars.len() {
            match chars[i] {
                '-' => flags.left = true,
                '#' => flags.alt = true,
                '+' => flags.plus = true,
                ' ' => flags.space = true,
                '0' => flags.zero = true,
                ',' => flags.group = true,
                '(' => flags.paren = true,
                '<' if explicit.is_none() => relative = true,
                _ => break,
            }
            i += 1;
        }
        let mut width: Option<usize> = None;
        while i < chars.len() && chars[i].is_ascii_digit() {
            width = Some(width.unwrap_or(0).saturating_mul(10).saturating_add(chars[i] as usize - '0' as usize));
            i += 1;
        }
        let mut precision: Option<usize> = None;
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            let mut p = 0usize;
            let mut any = false;
            while i < chars.len() && chars[i].is_ascii_digit() {
                p = p.saturating_mul(10).saturating_add(chars[i] as usize - '0' as usize);
                i += 1;
                any = true;
            }
            if !any {
                return Err(fmt_err("Format precision after '.' is missing."));
            }
            precision = Some(p.min(340));
        }
        let width = width.map(|w| w.min(FORMAT_WIDTH_MAX));
        let Some(&conv) = chars.get(i) else {
            return Err(fmt_err(format!(
                "Incomplete format specifier {:?}; write %% for a literal percent sign.",
                chars[spec_start..].iter().collect::<String>()
            )));
        };
        i += 1;
        let tconv = if conv == 't' || conv == 'T' {
            let Some(&x) = chars.get(i) else {
                return Err(fmt_err("Date/time conversion %t needs a suffix such as %tY."));
            };
            i += 1;
            Some(x)
        } else {
            None
        };
        let body = match conv {
            '%' => "%".to_string(),
            'n' => "\n".to_string(),
            _ => {
                let idx = if relative {
                    last.ok_or_else(|| fmt_err("Format %< has no previous argument."))?
                } else if let Some(e) = explicit {
                    e
                } else {
                    ordinary += 1;
                    ordinary - 1
                };
                last = Some(idx);
                let arg = args.get(idx).ok_or_else(|| {
                    fmt_err(format!("Format specifier '%{conv}' has no argument: {} value(s) given.", args.len()))
                })?;
                let mut body = convert(conv, tconv, arg, flags, precision)?;
                if conv.is_ascii_uppercase() {
                    body = body.to_uppercase();
                }
                body
            }
        };
        // Width padding.
        let len = body.chars().count();
        match width {
            Some(w) if w > len => {
                let pad = w - len;
                if flags.left {
                    out.push_str(&body);
                    out.extend(std::iter::repeat_n(' ', pad));
                } else if flags.zero && matches!(conv, 'd' | 'o' | 'x' | 'X' | 'e' | 'E' | 'f' | 'g' | 'G') {
                    // Zeros go after any sign or radix prefix.
                    let mut prefix_len = usize::from(body.starts_with(['-', '+', ' ', '(']));
                    if body[prefix_len..].starts_with("0x") || body[prefix_len..].starts_with("0X") {
                        prefix_len += 2;
                    }
                    out.push_str(&body[..prefix_len]);
                    out.extend(std::iter::repeat_n('0', pad));
                    out.push_str(&body[prefix_len..]);
                } else {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(&body);
                }
            }
            _ => out.push_str(&body),
        }
        if out.len() > STRING_BYTES_MAX {
            return Err(fmt_err(format!("Format result exceeds {STRING_BYTES_MAX} bytes.")));
        }
    }
    Ok(out)
}

fn group_digits(digits: &str) -> String {
    let bytes: Vec<char> = digits.chars().collect();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in bytes.iter().enumerate() {
        let left = bytes.len() - i;
        if i > 0 && left == left / 3 * 3 {
            out.push(',');
        }
        out.push(*c);
    }
    out
}

/// Apply sign flags to an unsigned magnitude.
fn signed(neg: bool, mag: String, flags: Flags) -> String {
    if neg {
        if flags.paren {
            format!("({mag})")
        } else {
            format!("-{mag}")
        }
    } else if flags.plus {
        format!("+{mag}")
    } else if flags.space {
        format!(" {mag}")
    } else {
        mag
    }
}

fn number_of(v: &Value, conv: char) -> Result<f64> {
    match v {
        Value::Double(d) => Ok(*d),
        Value::Long(n) => Ok(*n as f64),
        other => Err(fmt_err(format!("Format '%{conv}' expects a Number, {} provided.", other.type_name()))),
    }
}

/// Fixed notation as Java prints it: HALF_UP rounding of the shortest decimal form of
/// the double, padded with zeros (so `%.20f` of 0.1 shows no binary noise).
fn fixed(d: f64, precision: usize) -> String {
    let r = decimal_round(d.abs(), precision as i64, true);
    let text = format!("{r}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    if frac.len() > precision {
        return format!("{r:.precision$}");
    }
    if precision == 0 {
        return int.to_string();
    }
    format!("{int}.{frac}{}", "0".repeat(precision - frac.len()))
}

/// Java `%e`: `d.dddddde+xx`.
fn scientific(d: f64, precision: usize) -> String {
    let a = d.abs();
    let text = format!("{a:.precision$e}");
    let (mant, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}e{sign}{:02}", exp.abs())
}

fn convert(conv: char, tconv: Option<char>, arg: &Value, flags: Flags, precision: Option<usize>) -> Result<String> {
    let truncate = |s: String| match precision {
        Some(p) => s.chars().take(p).collect(),
        None => s,
    };
    Ok(match conv.to_ascii_lowercase() {
        's' => truncate(scalar_string(arg).unwrap_or_else(|| fql_repr(arg))),
        '@' => truncate(fql_repr(arg)),
        'b' => truncate(match arg {
            Value::Null => "false".into(),
            Value::Bool(b) => b.to_string(),
            _ => "true".into(),
        }),
        'c' => match arg {
            Value::Long(n) => u32::try_from(*n)
                .ok()
                .and_then(char::from_u32)
                .map(String::from)
                .ok_or_else(|| fmt_err(format!("Format '%c': {n} is not a Unicode code point.")))?,
            Value::String(s) if s.chars().count() == 1 => s.clone(),
            other => return Err(fmt_err(format!("Format '%c' expects a character, {} provided.", other.type_name()))),
        },
        'd' => match arg {
            Value::Long(n) => {
                let mag = n.unsigned_abs().to_string();
                let mag = if flags.group { group_digits(&mag) } else { mag };
                signed(*n < 0, mag, flags)
            }
            other => return Err(fmt_err(format!("Format '%d' expects an Integer, {} provided.", other.type_name()))),
        },
        'x' | 'o' => match arg {
            Value::Long(n) => {
                let u = *n as u64;
                let (digits, prefix) =
                    if conv.eq_ignore_ascii_case(&'x') { (format!("{u:x}"), "0x") } else { (format!("{u:o}"), "0") };
                if flags.alt {
                    format!("{prefix}{digits}")
                } else {
                    digits
                }
            }
            other => {
                return Err(fmt_err(format!("Format '%{conv}' expects an Integer, {} provided.", other.type_name())))
            }
        },
        'f' => {
            let d = number_of(arg, conv)?;
            let p = precision.unwrap_or(6);
            let s = fixed(d, p);
            let s = if flags.group {
                let (int, frac) = s.split_once('.').map_or((s.as_str(), None), |(a, b)| (a, Some(b)));
                match frac {
                    Some(f) => format!("{}.{f}", group_digits(int)),
                    None => group_digits(int),
                }
            } else {
                s
            };
            signed(d.is_sign_negative() && d != 0.0, s, flags)
        }
        'e' => {
            let d = number_of(arg, conv)?;
            signed(d.is_sign_negative() && d != 0.0, scientific(d, precision.unwrap_or(6)), flags)
        }
        'g' => {
            let d = number_of(arg, conv)?;
            let p = precision.unwrap_or(6).max(1);
            let rounded = d.abs();
            let s = if rounded != 0.0 && (rounded < 1e-4 || rounded >= 10f64.powi(p as i32)) {
                scientific(d, p - 1)
            } else {
                let exp = if rounded == 0.0 { 0 } else { rounded.log10().floor() as i64 };
                fixed(d, (p as i64 - 1 - exp).max(0) as usize)
            };
            signed(d.is_sign_negative() && d != 0.0, s, flags)
        }
        't' => truncate(format_time_conv(tconv.unwrap_or('c'), arg)?),
        other => {
            return Err(fmt_err(format!(
                "Unsupported format conversion '%{other}'; use %s %d %f %e %g %x %o %b %c %t %@ %n or %%."
            )))
        }
    })
}

/// `%t` conversions over a Time, a Date, or an Integer of milliseconds since the epoch.
fn format_time_conv(c: char, arg: &Value) -> Result<String> {
    use chrono::{DateTime, Utc};
    let t: DateTime<Utc> = match arg {
        Value::Time(t) => *t,
        Value::Date(d) => d.and_hms_opt(0, 0, 0).map(|x| x.and_utc()).unwrap_or_default(),
        Value::Long(ms) => DateTime::<Utc>::from_timestamp_millis(*ms)
            .ok_or_else(|| fmt_err(format!("Format '%t': {ms} milliseconds is out of range.")))?,
        other => return Err(fmt_err(format!("Format '%t' expects a Time or Date, {} provided.", other.type_name()))),
    };
    let pattern = match c {
        'Y' => "%Y",
        'y' => "%y",
        'C' => "%C",
        'm' => "%m",
        'd' => "%d",
        'e' => "%-d",
        'B' => "%B",
        'b' | 'h' => "%b",
        'A' => "%A",
        'a' => "%a",
        'j' => "%j",
        'H' => "%H",
        'I' => "%I",
        'k' => "%-H",
        'l' => "%-I",
        'M' => "%M",
        'S' => "%S",
        'L' => "%3f",
        'N' => "%9f",
        'p' => "%P",
        'z' => "+0000",
        'Z' => "UTC",
        's' => return Ok(t.timestamp().to_string()),
        'Q' => return Ok(t.timestamp_millis().to_string()),
        'R' => "%H:%M",
        'T' => "%H:%M:%S",
        'r' => "%I:%M:%S %p",
        'D' => "%m/%d/%y",
        'F' => "%Y-%m-%d",
        'c' => "%a %b %d %H:%M:%S UTC %Y",
        other => return Err(fmt_err(format!("Unsupported date/time conversion '%t{other}'."))),
    };
    Ok(t.format(pattern).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_format_basics() {
        let f = |s: &str, a: &[Value]| java_format(s, a).unwrap();
        assert_eq!(f("always 100%%", &[]), "always 100%");
        assert_eq!(f("%3$s%1$s %2$s", &["DB".into(), "rocks".into(), "Fauna".into()]), "FaunaDB rocks");
        assert_eq!(f("%.4f", &[Value::Double(3.25)]), "3.2500");
        assert_eq!(f("%.2f", &[Value::Double(0.125)]), "0.13");
        assert_eq!(f("%05d|%-4d|%4d", &[Value::Long(-42), Value::Long(7), Value::Long(7)]), "-0042|7   |   7");
        assert_eq!(f("%,d", &[Value::Long(1234567)]), "1,234,567");
        assert_eq!(f("%x %X %o", &[Value::Long(255), Value::Long(255), Value::Long(8)]), "ff FF 10");
        assert_eq!(f("%e", &[Value::Double(12345.678)]), "1.234568e+04");
        assert_eq!(f("%b %s", &[Value::Null, Value::Double(10.0)]), "false 10.0");
        assert_eq!(f("%@", &[Value::str("x")]), "\"x\"");
        assert_eq!(f("%s %<s", &[Value::str("a")]), "a a");
        assert_eq!(
            f(
                "%.20f|%.0f|%e|%.2e",
                &[Value::Double(0.1), Value::Double(2.5), Value::Double(0.0), Value::Double(-1e-300)]
            ),
            "0.10000000000000000000|3|0.000000e+00|-1.00e-300"
        );
        assert_eq!(
            f("%+d|% d|%(d|%#x", &[Value::Long(5), Value::Long(5), Value::Long(-5), Value::Long(255)]),
            "+5| 5|(5)|0xff"
        );
        assert_eq!(f("%08.2f|%,.1f", &[Value::Double(-3.33333), Value::Double(1234567.25)]), "-0003.33|1,234,567.3");
        assert!(java_format("%d", &[Value::Double(1.5)]).is_err());
        assert!(java_format("%s", &[]).is_err());
    }

    #[test]
    fn regex_translation() {
        assert_eq!(java_regex(r"\Qa.b\E+"), r"a\.b+");
        assert_eq!(java_regex(r"\\Q"), r"\\Q");
        assert_eq!(quote(r"f(\w+)a"), r"\Qf(\w+)a\E");
    }
}
