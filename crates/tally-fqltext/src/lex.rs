//! Tokens of the JavaScript subset: identifiers, strings (`'…'`, `"…"`, and backtick
//! strings without `${}`), numbers, punctuation and `=>`; comments and whitespace skipped.

use crate::{ParseError, Pos, SOURCE_BYTES_MAX, TOKENS_MAX};

/// Prefix of the messages for input that stops inside a string or comment.
pub(crate) const UNTERMINATED: &str = "unterminated";

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    /// A number literal: its value as JavaScript sees it, and the exact integer when the
    /// literal is written as one that fits in 64 bits (unsigned: the sign is a separate token).
    Num(f64, Option<u64>),
    /// One of `( ) [ ] { } , : ; . - +`.
    Punct(char),
    Arrow,
    End,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

pub(crate) fn tokens(src: &str) -> Result<Vec<Token>, ParseError> {
    if src.len() > SOURCE_BYTES_MAX {
        let msg = format!("the text is {} bytes; at most {SOURCE_BYTES_MAX} are accepted", src.len());
        return Err(Pos { line: 1, column: 1 }.error(msg));
    }
    let mut lx = Lexer { chars: src.chars().collect(), i: 0, pos: Pos { line: 1, column: 1 } };
    let mut out = Vec::new();
    loop {
        lx.skip_space()?;
        let pos = lx.pos;
        let Some(c) = lx.peek(0) else {
            out.push(Token { tok: Tok::End, pos });
            return Ok(out);
        };
        if out.len() >= TOKENS_MAX {
            return Err(pos.error(format!("more than {TOKENS_MAX} tokens; split the text into several queries")));
        }
        let tok = lx.token(c)?;
        out.push(Token { tok, pos });
    }
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    pos: Pos,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c == '$' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    is_ident_start(c) || c.is_alphanumeric()
}

fn is_line_end(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        // "\r\n" is one line end: the '\r' moves to the next line only when alone.
        if c == '\n' || (is_line_end(c) && !(c == '\r' && self.peek(0) == Some('\n'))) {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn skip_space(&mut self) -> Result<(), ParseError> {
        while let Some(c) = self.peek(0) {
            if c.is_whitespace() || c == '\u{feff}' {
                self.bump();
            } else if c == '/' && self.peek(1) == Some('/') {
                while self.peek(0).is_some_and(|c| !is_line_end(c)) {
                    self.bump();
                }
            } else if c == '/' && self.peek(1) == Some('*') {
                let start = self.pos;
                self.bump();
                self.bump();
                loop {
                    match self.bump() {
                        None => return Err(start.error(format!("{UNTERMINATED} comment: add */"))),
                        Some('*') if self.peek(0) == Some('/') => {
                            self.bump();
                            break;
                        }
                        Some(_) => {}
                    }
                }
            } else {
                break;
            }
        }
        Ok(())
    }

    fn token(&mut self, c: char) -> Result<Tok, ParseError> {
        let pos = self.pos;
        if is_ident_start(c) {
            let mut s = String::new();
            while let Some(c) = self.peek(0).filter(|c| is_ident_char(*c)) {
                s.push(c);
                self.bump();
            }
            return Ok(Tok::Ident(s));
        }
        if c.is_ascii_digit() || (c == '.' && self.peek(1).is_some_and(|d| d.is_ascii_digit())) {
            return self.number(pos);
        }
        match c {
            '"' | '\'' | '`' => self.string(c, pos),
            '=' if self.peek(1) == Some('>') => {
                self.bump();
                self.bump();
                Ok(Tok::Arrow)
            }
            '(' | ')' | '[' | ']' | '{' | '}' | ',' | ':' | ';' | '.' | '-' | '+' => {
                self.bump();
                Ok(Tok::Punct(c))
            }
            _ => Err(pos.error(format!("unexpected character {c:?}"))),
        }
    }

    fn number(&mut self, pos: Pos) -> Result<Tok, ParseError> {
        let radix = match (self.peek(0), self.peek(1)) {
            (Some('0'), Some('x' | 'X')) => 16,
            (Some('0'), Some('o' | 'O')) => 8,
            (Some('0'), Some('b' | 'B')) => 2,
            _ => 10,
        };
        if radix != 10 {
            self.bump();
            self.bump();
            let digits = self.take_while(|c| c.is_digit(radix) || c == '_');
            return self.radix_number(&digits, radix, pos);
        }
        let mut text = self.take_while(|c| c.is_ascii_digit() || c == '_');
        let mut integer = true;
        if self.peek(0) == Some('.') {
            integer = false;
            self.bump();
            text.push('.');
            text.push_str(&self.take_while(|c| c.is_ascii_digit() || c == '_'));
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            integer = false;
            self.bump();
            text.push('e');
            if let Some(sign @ ('+' | '-')) = self.peek(0) {
                self.bump();
                text.push(sign);
            }
            text.push_str(&self.take_while(|c| c.is_ascii_digit() || c == '_'));
        }
        if self.peek(0).is_some_and(is_ident_char) {
            return Err(self.pos.error("a number must not run into a name; add a space or an operator"));
        }
        let text = clean_digits(&text, pos)?;
        if integer && text.len() > 1 && text.starts_with('0') {
            return Err(pos.error("numbers do not start with 0 (write 0o17 for octal)"));
        }
        let value: f64 = text.parse().map_err(|_| pos.error(format!("{text:?} is not a number")))?;
        let exact = if integer { text.parse::<u64>().ok() } else { None };
        Ok(Tok::Num(value, exact))
    }

    fn radix_number(&self, digits: &str, radix: u32, pos: Pos) -> Result<Tok, ParseError> {
        let digits = clean_digits(digits, pos)?;
        if digits.is_empty() || self.peek(0).is_some_and(is_ident_char) {
            return Err(pos.error(format!("expected base-{radix} digits")));
        }
        let exact = u64::from_str_radix(&digits, radix).ok();
        let value = digits.chars().fold(0f64, |acc, d| acc * radix as f64 + d.to_digit(radix).unwrap_or(0) as f64);
        Ok(Tok::Num(value, exact))
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek(0).filter(|c| keep(*c)) {
            s.push(c);
            self.bump();
        }
        s
    }

    fn string(&mut self, quote: char, pos: Pos) -> Result<Tok, ParseError> {
        self.bump();
        let mut s = String::new();
        loop {
            let here = self.pos;
            match self.bump() {
                None => return Err(pos.error(format!("{UNTERMINATED} string: add {quote}"))),
                Some(c) if c == quote => return Ok(Tok::Str(s)),
                Some('\\') => self.escape(&mut s, here)?,
                Some('$') if quote == '`' && self.peek(0) == Some('{') => {
                    return Err(here.error("${…} in a template string is JavaScript; use Concat or Format instead"))
                }
                // Not "unterminated": more lines cannot fix it, so a REPL reports it at once.
                Some(c) if quote != '`' && matches!(c, '\n' | '\r') => {
                    let msg = format!(
                        "a {quote}…{quote} string ends at the end of its line: close it, or write \\n or use `…`"
                    );
                    return Err(pos.error(msg));
                }
                Some(c) => s.push(c),
            }
        }
    }

    fn escape(&mut self, s: &mut String, at: Pos) -> Result<(), ParseError> {
        let Some(c) = self.bump() else {
            return Err(at.error(format!("{UNTERMINATED} string: nothing after \\")));
        };
        let ch = match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            '0' if !self.peek(0).is_some_and(|d| d.is_ascii_digit()) => '\0',
            'x' => self.hex_escape(2, at)?,
            'u' if self.peek(0) == Some('{') => {
                self.bump();
                let hex = self.take_while(|c| c.is_ascii_hexdigit());
                if self.bump() != Some('}') || hex.is_empty() || hex.len() > 6 {
                    return Err(at.error("expected \\u{…} with 1 to 6 hex digits"));
                }
                self.code_point(u32::from_str_radix(&hex, 16).unwrap_or(u32::MAX), at)?
            }
            'u' => self.unicode_escape(at)?,
            '\r' => {
                if self.peek(0) == Some('\n') {
                    self.bump();
                }
                return Ok(());
            }
            '\n' | '\u{2028}' | '\u{2029}' => return Ok(()),
            c if c.is_ascii_digit() => return Err(at.error("octal escapes are not allowed; use \\x or \\u")),
            c => c,
        };
        s.push(ch);
        Ok(())
    }

    fn hex_escape(&mut self, n: usize, at: Pos) -> Result<char, ParseError> {
        let hex = self.take_exact_hex(n).ok_or_else(|| at.error(format!("expected {n} hex digits")))?;
        self.code_point(u32::from_str_radix(&hex, 16).unwrap_or(0), at)
    }

    fn take_exact_hex(&mut self, n: usize) -> Option<String> {
        let hex: String = (0..n).map_while(|k| self.peek(k).filter(|c| c.is_ascii_hexdigit())).collect();
        if hex.len() != n {
            return None;
        }
        for _ in 0..n {
            self.bump();
        }
        Some(hex)
    }

    /// `\uXXXX`, joining a surrogate pair written as two escapes (as JavaScript strings do).
    fn unicode_escape(&mut self, at: Pos) -> Result<char, ParseError> {
        let bad = || at.error("expected \\u with 4 hex digits");
        let hi = u32::from_str_radix(&self.take_exact_hex(4).ok_or_else(bad)?, 16).unwrap_or(0);
        if (0xD800..0xDC00).contains(&hi) && self.peek(0) == Some('\\') && self.peek(1) == Some('u') {
            self.bump();
            self.bump();
            let lo = u32::from_str_radix(&self.take_exact_hex(4).ok_or_else(bad)?, 16).unwrap_or(0);
            if (0xDC00..0xE000).contains(&lo) {
                return self.code_point(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), at);
            }
        }
        self.code_point(hi, at)
    }

    fn code_point(&self, cp: u32, at: Pos) -> Result<char, ParseError> {
        char::from_u32(cp).ok_or_else(|| at.error(format!("\\u{{{cp:x}}} is not a character (a lone surrogate?)")))
    }
}

/// Removes JavaScript's numeric separators (`1_000`), which sit only between digits.
fn clean_digits(text: &str, pos: Pos) -> Result<String, ParseError> {
    if text.starts_with('_') || text.ends_with('_') || text.contains("__") || text.contains("_.") || text.contains("._")
    {
        return Err(pos.error("a _ in a number goes only between digits"));
    }
    Ok(text.replace('_', ""))
}
