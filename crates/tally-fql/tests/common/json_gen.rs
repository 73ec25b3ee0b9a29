//! A small deterministic generator of JSON texts over FQL's keys, repeated keys included:
//! the random documents of the text parser's agreement tests (`tally-fql/tests/parse_text.rs`,
//! and `tally-exec/tests/read_text.rs`, which includes this file by path).

/// Object keys, written between quotes as they are: FQL's, and escaped ones.
const KEYS: &[&str] = &[
    "let",
    "in",
    "var",
    "object",
    "query",
    "lambda",
    "expr",
    "get",
    "select",
    "from",
    "default",
    "add",
    "if",
    "then",
    "else",
    "do",
    "map",
    "collection",
    "ref",
    "id",
    "database",
    "@ref",
    "@obj",
    "@ts",
    "@set",
    "@query",
    "@date",
    "x",
    "y",
    "abort",
    "concat",
    "separator",
    "paginate",
    "size",
    "match",
    "index",
    "terms",
    "create",
    "params",
    "data",
    "update",
    "password",
    "exists",
    "filter",
    "\\u0040ref",
    "l\\u0065t",
    "é",
    "",
];

/// Leaf JSON texts.
const LEAVES: &[&str] = &[
    "1",
    "-2",
    "0",
    "-0",
    "2.5",
    "1e2",
    "null",
    "true",
    "false",
    "\"x\"",
    "\"collections\"",
    "\"self\"",
    "\"a\"",
    "\"2020-01-01T00:00:00Z\"",
    "\"2020-01-01\"",
    "\"AQID\"",
    "[]",
    "{}",
    "9223372036854775808",
    "\"\\u0040ref\"",
    "-0.0",
    "1e-7",
    "\"\\ud83d\\ude00\"",
    "\"\\n\"",
];

pub struct JsonGen {
    state: u64,
}

impl JsonGen {
    /// `seed` must not be 0.
    pub fn new(seed: u64) -> JsonGen {
        JsonGen { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn pick(&mut self, xs: &'static [&'static str]) -> &'static str {
        xs[(self.next() % xs.len() as u64) as usize]
    }

    /// Appends one random document at most `depth` levels deep to `out`.
    pub fn text(&mut self, depth: u32, out: &mut String) {
        let roll = self.next() % 10;
        if depth == 0 || roll < 3 {
            out.push_str(self.pick(LEAVES));
        } else if roll < 5 {
            out.push('[');
            for i in 0..self.next() % 4 {
                if i > 0 {
                    out.push(',');
                }
                self.text(depth - 1, out);
            }
            out.push(']');
        } else {
            out.push('{');
            for i in 0..1 + self.next() % 3 {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                out.push_str(self.pick(KEYS));
                out.push_str("\":");
                self.text(depth - 1, out);
            }
            out.push('}');
        }
    }
}
