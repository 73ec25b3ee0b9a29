//! A JSON text read once into a flat list of tokens (a "tape"), for the request path's
//! common case: the expression and the logged record's tree are then built from the tape
//! with plain loops, where serde's visitors cost about three times the reading itself
//! (docs/benchmarks.md, "The query read once into a tape").
//!
//! It takes only text it reads exactly as serde_json reads it, and *declines* (`None`)
//! everything else, for the caller to parse as before: malformed JSON, a string with a
//! control character, an unknown escape or a lone surrogate (which serde_json refuses),
//! text that is not UTF-8, an object with a repeated key (a JSON tree keeps the last value
//! in the first one's place), nesting deeper than [`DEPTH_MAX`]. A string without escapes
//! is borrowed from the text; one with escapes is unescaped into a buffer the caller
//! lends (Python's driver escapes every non-ASCII character). A number other than a plain integer of up to 18 digits is read by
//! serde_json itself, from its own bytes, so every number is the one serde_json reads.
//!
//! Architecture invariant: a tape holds, in order, the values serde_json would hand a
//! visitor for the same text (`tally-exec` `tests/read_text.rs` compares what is built
//! from both over a corpus and random documents).

use serde::Deserialize;

/// Deepest nesting taken (serde_json itself reads up to 127 levels).
pub const DEPTH_MAX: u32 = 100;

/// Longest integer read here; longer ones go to serde_json (they may not fit an `i64`).
const INT_DIGITS_MAX: usize = 18;

/// One value of a [`Tape`]. A container's elements follow it; an object's as key, value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tok<'a> {
    Null,
    Bool(bool),
    /// An integer within `i64` (serde_json's `u64` or `i64`).
    Long(i64),
    /// An integer above `i64::MAX` (serde_json's `u64`).
    BigU64(u64),
    /// Any other number (finite: serde_json reads no other).
    Double(f64),
    /// A string, unescaped: borrowed from the text, or from the buffer for escaped ones.
    Str(&'a str),
    /// An array of `len` elements, whose tokens end before index `end`.
    Array {
        len: u32,
        end: u32,
    },
    /// An object of `len` (key, value) entries, keys distinct, whose tokens end before `end`.
    Object {
        len: u32,
        end: u32,
    },
}

/// A JSON text's values in text order.
#[derive(Debug)]
pub struct Tape<'a> {
    toks: Vec<Tok<'a>>,
}

/// A value in a tape.
#[derive(Clone, Copy)]
pub struct Node<'t, 'a> {
    toks: &'t [Tok<'a>],
    at: usize,
}

impl<'a> Tape<'a> {
    /// The tape of `text`, or `None` (see the module doc). Strings with escapes are
    /// unescaped into `buf` (not touched unless the text has one).
    pub fn parse(text: &'a [u8], buf: &'a mut String) -> Option<Tape<'a>> {
        // Positions and counts are kept as u32: a longer text is declined up front.
        u32::try_from(text.len()).ok()?;
        let text = std::str::from_utf8(text).ok()?;
        let mut r = Reader {
            s: text.as_bytes(),
            text,
            i: 0,
            toks: Vec::with_capacity(text.len() / 5),
            keys: Vec::new(),
            unescaped: buf,
            escaped: Vec::new(),
        };
        r.value(0)?;
        r.ws();
        if r.i != r.s.len() {
            return None;
        }
        // The buffer is complete: the escaped strings' tokens can point into it.
        let (mut toks, escaped) = (r.toks, r.escaped);
        let buf: &'a str = r.unescaped;
        for (at, from, to) in escaped {
            toks[at] = Tok::Str(buf.get(from..to)?);
        }
        Some(Tape { toks })
    }

    /// The text's value.
    pub fn root(&self) -> Node<'_, 'a> {
        Node { toks: &self.toks, at: 0 }
    }

    /// How many values (keys included) the tape holds.
    pub fn len(&self) -> usize {
        self.toks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.toks.is_empty()
    }
}

/// A [`Tape`] written value by value by a reader of another encoding of a JSON tree (the
/// logged record's query tree, in `tally-exec`), with the checks [`Tape::parse`] makes of
/// a text: nesting up to [`DEPTH_MAX`] containers, an object's keys distinct. A container
/// is declared with its count of values and closes itself when the last is in; an
/// object's values each follow their key ([`TapeBuilder::wants_key`]). Every method
/// answers `None` for what a text could not hold (a value where a key is due, a repeated
/// key, anything after the root value), and the builder is then of no further use.
#[derive(Default)]
pub struct TapeBuilder<'a> {
    toks: Vec<Tok<'a>>,
    /// Open containers, innermost last.
    open: Vec<Open>,
    /// The keys of the open objects, innermost last.
    keys: Vec<&'a str>,
    /// The root value is complete.
    done: bool,
}

struct Open {
    /// Its token's index.
    at: usize,
    /// Values still to come.
    left: u32,
    /// An object's: where its keys start in `keys`, and whether a key comes next.
    object: Option<(usize, bool)>,
}

impl<'a> TapeBuilder<'a> {
    /// Whether an object key comes next.
    pub fn wants_key(&self) -> bool {
        matches!(self.open.last(), Some(Open { object: Some((_, true)), .. }))
    }

    /// Whether the root value is complete.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next key of the innermost object.
    pub fn key(&mut self, k: &'a str) -> Option<()> {
        let Some(Open { object: Some((_, want)), .. }) = self.open.last_mut() else { return None };
        if !*want {
            return None;
        }
        *want = false;
        self.keys.push(k);
        self.toks.push(Tok::Str(k));
        Some(())
    }

    /// A value that is not a container.
    pub fn scalar(&mut self, t: Tok<'a>) -> Option<()> {
        if matches!(t, Tok::Array { .. } | Tok::Object { .. }) {
            return None;
        }
        self.open_value()?;
        self.toks.push(t);
        self.completed()
    }

    /// An array of `len` values, which follow.
    pub fn array(&mut self, len: u32) -> Option<()> {
        self.container(Tok::Array { len, end: 0 }, len, None)
    }

    /// An object of `len` entries, which follow as key, value.
    pub fn object(&mut self, len: u32) -> Option<()> {
        self.container(Tok::Object { len, end: 0 }, len, Some((self.keys.len(), true)))
    }

    /// The tape, once its root value is complete.
    pub fn finish(self) -> Option<Tape<'a>> {
        self.done.then_some(Tape { toks: self.toks })
    }

    /// A value may start here: not after the root, not where a key is due.
    fn open_value(&self) -> Option<()> {
        (!self.done && !self.wants_key()).then_some(())
    }

    fn container(&mut self, tok: Tok<'a>, len: u32, object: Option<(usize, bool)>) -> Option<()> {
        self.open_value()?;
        if self.open.len() >= DEPTH_MAX as usize {
            return None;
        }
        let at = self.toks.len();
        self.toks.push(tok);
        if len == 0 {
            return self.closed(at);
        }
        self.open.push(Open { at, left: len, object });
        Some(())
    }

    /// The container whose token is at `at` is complete.
    fn closed(&mut self, at: usize) -> Option<()> {
        let end = u32::try_from(self.toks.len()).ok()?;
        match &mut self.toks[at] {
            Tok::Array { end: e, .. } | Tok::Object { end: e, .. } => *e = end,
            _ => return None,
        }
        self.completed()
    }

    /// A value is complete: it counts in its container, which may then be complete too.
    fn completed(&mut self) -> Option<()> {
        let Some(top) = self.open.last_mut() else {
            self.done = true;
            return Some(());
        };
        top.left -= 1;
        if let Some((_, want)) = &mut top.object {
            *want = true;
        }
        if top.left > 0 {
            return Some(());
        }
        let top = self.open.pop()?;
        if let Some((from, _)) = top.object {
            let keys = &mut self.keys;
            let distinct = if keys.len() - from <= 16 {
                (from..keys.len()).all(|i| keys[from..i].iter().all(|&x| x != keys[i]))
            } else {
                let mut sorted = keys[from..].to_vec();
                sorted.sort_unstable();
                sorted.windows(2).all(|w| w[0] != w[1])
            };
            if !distinct {
                return None;
            }
            keys.truncate(from);
        }
        self.closed(top.at)
    }
}

impl<'t, 'a> Node<'t, 'a> {
    pub fn tok(&self) -> Tok<'a> {
        self.toks[self.at]
    }

    /// Index of the token after this value (and everything inside it).
    fn next(&self) -> usize {
        match self.toks[self.at] {
            Tok::Array { end, .. } | Tok::Object { end, .. } => end as usize,
            _ => self.at + 1,
        }
    }

    /// An array's elements (none for any other value).
    pub fn elements(&self) -> Elements<'t, 'a> {
        let left = match self.tok() {
            Tok::Array { len, .. } => len,
            _ => 0,
        };
        Elements { toks: self.toks, at: self.at + 1, left }
    }

    /// An object's entries (none for any other value).
    pub fn entries(&self) -> Entries<'t, 'a> {
        let left = match self.tok() {
            Tok::Object { len, .. } => len,
            _ => 0,
        };
        Entries { toks: self.toks, at: self.at + 1, left }
    }
}

pub struct Elements<'t, 'a> {
    toks: &'t [Tok<'a>],
    at: usize,
    left: u32,
}

impl<'t, 'a> Iterator for Elements<'t, 'a> {
    type Item = Node<'t, 'a>;
    fn next(&mut self) -> Option<Node<'t, 'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let n = Node { toks: self.toks, at: self.at };
        self.at = n.next();
        Some(n)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for Elements<'_, '_> {}

pub struct Entries<'t, 'a> {
    toks: &'t [Tok<'a>],
    at: usize,
    left: u32,
}

impl<'t, 'a> Iterator for Entries<'t, 'a> {
    type Item = (&'a str, Node<'t, 'a>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The reader writes a string key before each value.
        let Tok::Str(k) = self.toks[self.at] else { return None };
        let n = Node { toks: self.toks, at: self.at + 1 };
        self.at = n.next();
        Some((k, n))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for Entries<'_, '_> {}

struct Reader<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    toks: Vec<Tok<'a>>,
    /// The keys of the objects being read, innermost last (for the repeated-key check).
    keys: Vec<Key<'a>>,
    unescaped: &'a mut String,
    /// The tokens of strings with escapes: (index, range in `unescaped`), for
    /// [`Tape::parse`] to point at once the buffer is complete.
    escaped: Vec<(usize, usize, usize)>,
}

/// An object key while the text is read.
#[derive(Clone, Copy)]
enum Key<'a> {
    Text(&'a str),
    /// A range of the unescaped buffer.
    Unescaped(usize, usize),
}

/// A string as [`Reader::string`] reads it.
enum Read<'a> {
    Text(&'a str),
    Unescaped(usize, usize),
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn value(&mut self, depth: u32) -> Option<()> {
        let tok = match self.peek()? {
            b'{' => return self.object(depth + 1),
            b'[' => return self.array(depth + 1),
            b'"' => match self.string()? {
                Read::Text(s) => Tok::Str(s),
                Read::Unescaped(from, to) => {
                    self.escaped.push((self.toks.len(), from, to));
                    Tok::Str("")
                }
            },
            b't' => self.word(b"true", Tok::Bool(true))?,
            b'f' => self.word(b"false", Tok::Bool(false))?,
            b'n' => self.word(b"null", Tok::Null)?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        };
        self.toks.push(tok);
        Some(())
    }

    fn word(&mut self, w: &[u8], tok: Tok<'a>) -> Option<Tok<'a>> {
        if !self.s[self.i..].starts_with(w) {
            return None;
        }
        self.i += w.len();
        Some(tok)
    }

    /// A string at `"`: where it is in the text, or unescaped (without control
    /// characters, as serde_json requires). Both ends of a slice of the text are at an
    /// ASCII byte of UTF-8 text, so at char boundaries.
    fn string(&mut self) -> Option<Read<'a>> {
        let start = self.i + 1;
        let n = self.s[start..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.s[start + n] == b'"' {
            self.i = start + n + 1;
            return Some(Read::Text(self.text.get(start..start + n)?));
        }
        if self.s[start + n] != b'\\' {
            return None;
        }
        self.unescape(start)
    }

    /// The string from `start` (after its `"`), which has an escape, into `unescaped`.
    #[cold]
    #[inline(never)]
    fn unescape(&mut self, start: usize) -> Option<Read<'a>> {
        let from = self.unescaped.len();
        let mut at = start;
        loop {
            let n = self.s[at..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            // UTF-8 text cut at ASCII bytes.
            self.unescaped.push_str(std::str::from_utf8(&self.s[at..at + n]).ok()?);
            at += n;
            match self.s[at] {
                b'"' => break,
                b'\\' => {}
                _ => return None,
            }
            let c = match *self.s.get(at + 1)? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let hi = self.hex4(at + 2)?;
                    at += 4;
                    match hi {
                        // A surrogate pair; serde_json refuses a lone one.
                        0xD800..=0xDBFF => {
                            if self.s.get(at + 2..at + 4)? != b"\\u" {
                                return None;
                            }
                            let lo = self.hex4(at + 4)?;
                            if !(0xDC00..=0xDFFF).contains(&lo) {
                                return None;
                            }
                            at += 6;
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                        }
                        0xDC00..=0xDFFF => return None,
                        c => char::from_u32(c)?,
                    }
                }
                _ => return None,
            };
            self.unescaped.push(c);
            at += 2;
        }
        self.i = at + 1;
        Some(Read::Unescaped(from, self.unescaped.len()))
    }

    /// Four hex digits at `at`.
    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.s.get(at..at + 4)?;
        let mut v = 0u32;
        for &b in h {
            v = v * 16 + (b as char).to_digit(16)?;
        }
        Some(v)
    }

    /// A key's characters.
    fn key(&self, k: Key<'a>) -> &str {
        match k {
            Key::Text(s) => s,
            Key::Unescaped(from, to) => &self.unescaped[from..to],
        }
    }

    fn number(&mut self) -> Option<Tok<'a>> {
        let start = self.i;
        let neg = self.s[self.i] == b'-';
        self.i += neg as usize;
        let digits = self.s[self.i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let plain = digits > 0
            && digits <= INT_DIGITS_MAX
            && !(digits > 1 && self.s[self.i] == b'0')
            && !matches!(self.s.get(self.i + digits), Some(b'.' | b'e' | b'E'));
        if plain {
            let mut v: i64 = 0;
            for &b in &self.s[self.i..self.i + digits] {
                v = v * 10 + i64::from(b - b'0');
            }
            self.i += digits;
            // serde_json reads `-0` as the float -0.0.
            if !(neg && v == 0) {
                return Some(Tok::Long(if neg { -v } else { v }));
            }
        }
        // Everything else as serde_json reads it, from the number's own bytes. Taking
        // every byte a number may hold is safe: where serde_json would stop inside them,
        // it refuses the text (a number is followed by `,`, `]`, `}` or whitespace), and
        // its reading of these bytes alone fails too.
        self.i = start;
        let len =
            self.s[start..].iter().take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')).count();
        self.i = start + len;
        let mut de = serde_json::Deserializer::from_slice(&self.s[start..start + len]);
        let n = serde_json::Number::deserialize(&mut de).ok()?;
        de.end().ok()?;
        if let Some(i) = n.as_i64() {
            Some(Tok::Long(i))
        } else if let Some(u) = n.as_u64() {
            Some(Tok::BigU64(u))
        } else {
            n.as_f64().filter(|f| f.is_finite()).map(Tok::Double)
        }
    }

    fn array(&mut self, depth: u32) -> Option<()> {
        if depth > DEPTH_MAX {
            return None;
        }
        self.i += 1;
        let at = self.toks.len();
        self.toks.push(Tok::Array { len: 0, end: 0 });
        let mut len = 0u32;
        if self.peek()? == b']' {
            self.i += 1;
        } else {
            loop {
                self.value(depth)?;
                len += 1;
                match self.peek()? {
                    b',' => self.i += 1,
                    b']' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.toks[at] = Tok::Array { len, end: u32::try_from(self.toks.len()).ok()? };
        Some(())
    }

    fn object(&mut self, depth: u32) -> Option<()> {
        if depth > DEPTH_MAX {
            return None;
        }
        self.i += 1;
        let at = self.toks.len();
        self.toks.push(Tok::Object { len: 0, end: 0 });
        let base = self.keys.len();
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let k = match self.string()? {
                    Read::Text(k) => {
                        self.toks.push(Tok::Str(k));
                        Key::Text(k)
                    }
                    Read::Unescaped(from, to) => {
                        self.escaped.push((self.toks.len(), from, to));
                        self.toks.push(Tok::Str(""));
                        Key::Unescaped(from, to)
                    }
                };
                self.keys.push(k);
                if self.peek()? != b':' {
                    return None;
                }
                self.i += 1;
                self.value(depth)?;
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if !self.distinct(base) {
            return None;
        }
        let len = u32::try_from(self.keys.len() - base).ok()?;
        self.keys.truncate(base);
        self.toks[at] = Tok::Object { len, end: u32::try_from(self.toks.len()).ok()? };
        Some(())
    }

    /// Are the keys from `keys[base..]` (one object's) distinct?
    fn distinct(&self, base: usize) -> bool {
        let keys = &self.keys[base..];
        if keys.len() <= 16 {
            return keys.iter().enumerate().all(|(i, &k)| keys[..i].iter().all(|&x| self.key(x) != self.key(k)));
        }
        let mut sorted: Vec<&str> = keys.iter().map(|&k| self.key(k)).collect();
        sorted.sort_unstable();
        sorted.windows(2).all(|w| w[0] != w[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tape's tokens, as text.
    fn toks(text: &str) -> Option<String> {
        let mut buf = String::new();
        Tape::parse(text.as_bytes(), &mut buf).map(|t| format!("{:?}", t.toks))
    }

    fn want(toks: &[Tok<'_>]) -> Option<String> {
        Some(format!("{toks:?}"))
    }

    /// Feeds a tape's tokens to a [`TapeBuilder`], as a reader of another encoding would.
    fn rebuilt<'a>(tape: &Tape<'a>) -> Option<Tape<'a>> {
        let mut b = TapeBuilder::default();
        for &t in &tape.toks {
            match t {
                Tok::Array { len, .. } => b.array(len)?,
                Tok::Object { len, .. } => b.object(len)?,
                Tok::Str(k) if b.wants_key() => b.key(k)?,
                t => b.scalar(t)?,
            }
        }
        b.finish()
    }

    /// The builder makes the tape the text makes (container extents included), and
    /// refuses what a text could not hold.
    #[test]
    fn a_built_tape_is_the_texts() {
        let texts = [
            r#"{"a": [1, -2, 2.5, true, null], "b": {"c": "é", "d": {}}, "e": [], "f": [[[]], {"g": [{}]}]}"#,
            r#"[{"let": [{"a": {"get": {"@ref": {"id": "1"}}}}], "in": {"var": "a"}}, "x", 18446744073709551615]"#,
            "7",
            "[]",
            "{}",
            r#"{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"ka":10,"kb":11,"kc":12,"kd":13,"ke":14,"kf":15,"kg":16,"kh":17}"#,
        ];
        for text in texts {
            let mut buf = String::new();
            let tape = Tape::parse(text.as_bytes(), &mut buf).unwrap();
            let built = rebuilt(&tape).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(format!("{:?}", built.toks), format!("{:?}", tape.toks), "{text}");
        }
        // A repeated key, in a small object and in one of more than 16 keys.
        let mut b = TapeBuilder::default();
        b.object(2).unwrap();
        b.key("a").unwrap();
        b.scalar(Tok::Null).unwrap();
        b.key("a").unwrap();
        assert!(b.scalar(Tok::Null).is_none());
        let mut b = TapeBuilder::default();
        b.object(20).unwrap();
        for i in 0..20 {
            b.key(["x", "y", "z", "w", "v"][i % 5]).unwrap();
            let last = b.scalar(Tok::Long(i as i64));
            assert_eq!(last.is_some(), i < 19);
        }
        // A value where a key is due, a key where a value is due, a container token as a
        // scalar, anything after the root, an unfinished root.
        let mut b = TapeBuilder::default();
        b.object(1).unwrap();
        assert!(b.scalar(Tok::Null).is_none());
        let mut b = TapeBuilder::default();
        b.array(1).unwrap();
        assert!(b.key("a").is_none());
        assert!(b.scalar(Tok::Array { len: 0, end: 0 }).is_none());
        b.scalar(Tok::Bool(true)).unwrap();
        assert!(b.is_done() && b.scalar(Tok::Null).is_none());
        let mut b = TapeBuilder::default();
        b.array(2).unwrap();
        b.scalar(Tok::Null).unwrap();
        assert!(b.finish().is_none());
        // Nesting: DEPTH_MAX containers, not one more.
        let mut b = TapeBuilder::default();
        for _ in 0..DEPTH_MAX {
            b.array(1).unwrap();
        }
        assert!(b.array(1).is_none());
        let mut b = TapeBuilder::default();
        for _ in 0..DEPTH_MAX {
            b.array(1).unwrap();
        }
        b.scalar(Tok::Null).unwrap();
        assert_eq!(b.finish().map(|t| t.len()), Some(DEPTH_MAX as usize + 1));
    }

    #[test]
    fn reads_values_in_text_order_with_container_extents() {
        use Tok::*;
        assert_eq!(
            toks(r#" {"a" : [1, -2, 2.5, true, null], "b": {"c": "é"}, "d": []} "#),
            want(&[
                Object { len: 3, end: 14 },
                Str("a"),
                Array { len: 5, end: 8 },
                Long(1),
                Long(-2),
                Double(2.5),
                Bool(true),
                Null,
                Str("b"),
                Object { len: 1, end: 12 },
                Str("c"),
                Str("é"),
                Str("d"),
                Array { len: 0, end: 14 },
            ])
        );
        // Escapes, as serde_json reads them; a repeated key is one however it is spelled.
        assert_eq!(
            toks(r#"{"a\"b":"\\\/\b\f\n\r\t","\u00e9":"x\u0000\ud83d\ude00y","é2":"\u2028"}"#),
            want(&[
                Object { len: 3, end: 7 },
                Str("a\"b"),
                Str("\\/\u{8}\u{c}\n\r\t"),
                Str("é"),
                Str("x\u{0}😀y"),
                Str("é2"),
                Str("\u{2028}"),
            ])
        );
        assert_eq!(toks(r#"{"\u0061":1,"a":2}"#), None);
        assert!(toks(r#"[{"\u0061":1},{"a":2,"\u0062":{"a\n":3}}]"#).is_some());
        let mut buf = String::new();
        let t = Tape::parse(br#"{"a":[1,[2,3],{"x":4}],"b":5}"#, &mut buf).unwrap();
        let entries: Vec<_> = t.root().entries().map(|(k, n)| (k, n.tok())).collect();
        assert_eq!(entries[1], ("b", Long(5)));
        let (_, a) = t.root().entries().next().unwrap();
        let items: Vec<_> = a.elements().map(|n| n.tok()).collect();
        assert_eq!(items, vec![Long(1), Array { len: 2, end: 7 }, Object { len: 1, end: 10 }]);
    }

    #[test]
    fn numbers_are_serde_jsons() {
        use Tok::*;
        let cases = [
            ("0", Long(0)),
            ("-7", Long(-7)),
            ("999999999999999999", Long(999_999_999_999_999_999)),
            ("9223372036854775807", Long(i64::MAX)),
            ("-9223372036854775808", Long(i64::MIN)),
            ("9223372036854775808", BigU64(1 << 63)),
            ("18446744073709551615", BigU64(u64::MAX)),
            ("18446744073709551616", Double(18446744073709551616.0)),
            ("-9223372036854775809", Double(-9223372036854775809.0)),
            ("1e3", Double(1000.0)),
            ("0.1", Double(0.1)),
        ];
        for (text, tok) in cases {
            assert_eq!(toks(text), want(&[tok]), "{text}");
        }
        // -0 is serde_json's float -0.0.
        let mut buf = String::new();
        let t = Tape::parse(b"-0", &mut buf).expect("-0 declined");
        assert!(matches!(t.root().tok(), Double(f) if f == 0.0 && f.is_sign_negative()));
        for bad in ["01", "-", "1.", ".5", "1e", "1e400", "--1", "1-2", "+1", "[1-2]", "0x1"] {
            assert_eq!(toks(bad), None, "{bad}");
        }
    }

    #[test]
    fn declines_what_it_does_not_read_as_serde_json_does() {
        let deep = format!("{}1{}", "[".repeat(DEPTH_MAX as usize + 1), "]".repeat(DEPTH_MAX as usize + 1));
        let ok_deep = format!("{}1{}", "[".repeat(DEPTH_MAX as usize), "]".repeat(DEPTH_MAX as usize));
        assert!(toks(&ok_deep).is_some());
        let dup_wide = format!("{{{}}}", (0..40).map(|i| format!("\"k{}\":{i}", i % 39)).collect::<Vec<_>>().join(","));
        let wide = format!("{{{}}}", (0..40).map(|i| format!("\"k{i}\":{i}")).collect::<Vec<_>>().join(","));
        assert!(toks(&wide).is_some());
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            "[1 2]",
            "{\"a\"}",
            "{\"a\":1,}",
            "{1:2}",
            "nul",
            "tru",
            "\"abc",
            r#""\x""#,
            r#""\u12""#,
            r#""\u12g4""#,
            r#""\ud800""#,
            r#""\ud800x""#,
            r#""\ud800\u0041""#,
            r#""\udc00\ud800""#,
            r#""a\"#,
            "\"tab\there\"",
            "1 x",
            r#"{"a":1,"a":2}"#,
            r#"[{"a":{"b":1,"b":1}}]"#,
            &deep,
            &dup_wide,
        ] {
            assert_eq!(toks(bad), None, "{bad:?}");
        }
        assert!(Tape::parse(b"\"\xff\"", &mut String::new()).is_none());
        // Repeated keys in different objects are fine.
        assert!(toks(r#"{"a":{"a":1},"b":{"a":2}}"#).is_some());
    }
}
