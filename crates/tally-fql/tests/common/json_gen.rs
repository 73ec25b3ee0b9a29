//! A small deterministic generator of JSON texts over given object keys and leaf texts,
//! repeated keys included: the random documents of the text parser's agreement tests
//! (`tally-fql/tests/parse_text.rs`, and `tally-exec/tests/read_text.rs`, which includes
//! this file by path).

pub struct JsonGen {
    state: u64,
    keys: &'static [&'static str],
    leaves: &'static [&'static str],
}

impl JsonGen {
    /// `keys` are written between quotes as they are (escapes included); `leaves` are
    /// JSON texts. `seed` must not be 0.
    pub fn new(seed: u64, keys: &'static [&'static str], leaves: &'static [&'static str]) -> JsonGen {
        JsonGen { state: seed, keys, leaves }
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
            out.push_str(self.pick(self.leaves));
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
                out.push_str(self.pick(self.keys));
                out.push_str("\":");
                self.text(depth - 1, out);
            }
            out.push('}');
        }
    }
}
