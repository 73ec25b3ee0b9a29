//! FQL v4 written as the JavaScript driver's calls (`Paginate(Documents(Collection("c")))`),
//! for people: `parse` turns the text into the wire JSON the official driver would send for
//! the same `q.X(...)` calls, and `format` prints a wire answer back in that syntax
//! (`Ref(Collection("players"), "1")`, `Time("…")`).
//!
//! The text is data, never JavaScript that runs: only literals, calls of the driver's
//! exported functions (bare or `q.`-prefixed) and arrow functions whose parameters become
//! `Var`s — exactly what `fauna-shell` users type. Each function's argument order, optional
//! arguments and wire keys come from one table (`spec.rs`) that both directions use.
//!
//! Owns: the text syntax and its errors. Must not: do I/O, know about the server, or
//! evaluate anything (the server does).

mod eval;
mod format;
mod lex;
mod parse;
mod spec;
mod unparse;

pub use format::format;

/// Largest source text accepted: text for people, not bulk data (that goes through a driver).
pub const SOURCE_BYTES_MAX: usize = 4 << 20;
/// Most tokens in one text; bounds the parser's memory (about 40 bytes a token) whatever
/// the text is made of.
pub const TOKENS_MAX: usize = 500_000;
/// Deepest nesting of calls, arrays, objects, parentheses and arrow bodies. The wire JSON
/// is at most about twice as deep, which stays within what the server accepts.
pub const NESTING_MAX: usize = 128;
/// Most expressions `parse_script` returns.
pub const SCRIPT_EXPRESSIONS_MAX: usize = 100_000;

/// Where the text went wrong: 1-based line and column (in characters), and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A position in the source, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub(crate) fn error(self, message: impl Into<String>) -> ParseError {
        ParseError { line: self.line, column: self.column, message: message.into() }
    }
}

/// One expression (an optional trailing `;` allowed) to the wire JSON.
pub fn parse(src: &str) -> Result<serde_json::Value, ParseError> {
    let tokens = lex::tokens(src)?;
    let ast = parse::Parser::new(&tokens).single()?;
    eval::to_wire(&ast)
}

/// A script: expressions one after another, separated by `;` or just whitespace (as
/// fauna-shell runs a file). Each comes with the line it starts on.
pub fn parse_script(src: &str) -> Result<Vec<(usize, serde_json::Value)>, ParseError> {
    let tokens = lex::tokens(src)?;
    let asts = parse::Parser::new(&tokens).script()?;
    asts.iter().map(|a| Ok((a.pos().line, eval::to_wire(a)?))).collect()
}

/// Whether `src` stops in the middle of something: an open bracket, string or comment.
/// A REPL then reads another line instead of reporting the error.
pub fn needs_more_input(src: &str) -> bool {
    match lex::tokens(src) {
        Err(e) => e.message.starts_with(lex::UNTERMINATED),
        Ok(tokens) => parse::open_brackets(&tokens) > 0,
    }
}
