//! Tokens to a syntax tree: literals, arrays, objects, calls, names and arrow functions.
//! Nothing is resolved here; `eval.rs` gives the tree its meaning.

use crate::lex::{Tok, Token};
use crate::{ParseError, Pos, NESTING_MAX, SCRIPT_EXPRESSIONS_MAX};

#[derive(Debug, Clone)]
pub(crate) enum Ast {
    Null(Pos),
    Bool(bool, Pos),
    Num(f64, Option<i64>, Pos),
    Str(String, Pos),
    Array(Vec<Ast>, Pos),
    /// Keys as written (order and duplicates kept; `eval.rs` applies JavaScript's rules).
    Object(Vec<(String, Ast)>, Pos),
    Ident(String, Pos),
    Call {
        name: String,
        args: Vec<Ast>,
        pos: Pos,
    },
    Arrow {
        params: Vec<String>,
        body: Box<Ast>,
        pos: Pos,
    },
}

impl Ast {
    pub(crate) fn pos(&self) -> Pos {
        match self {
            Ast::Null(p) | Ast::Bool(_, p) | Ast::Num(_, _, p) | Ast::Str(_, p) => *p,
            Ast::Array(_, p) | Ast::Object(_, p) | Ast::Ident(_, p) => *p,
            Ast::Call { pos, .. } | Ast::Arrow { pos, .. } => *pos,
        }
    }
}

/// How many brackets are open at the end of the tokens (negative: more closed than opened).
pub(crate) fn open_brackets(tokens: &[Token]) -> i64 {
    tokens.iter().fold(0, |n, t| match t.tok {
        Tok::Punct('(' | '[' | '{') => n + 1,
        Tok::Punct(')' | ']' | '}') => n - 1,
        _ => n,
    })
}

pub(crate) struct Parser<'t> {
    tokens: &'t [Token],
    i: usize,
    depth: usize,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Str(_) => "a string".into(),
        Tok::Num(..) => "a number".into(),
        Tok::Punct(c) => format!("`{c}`"),
        Tok::Arrow => "`=>`".into(),
        Tok::End => "the end of the text".into(),
    }
}

impl<'t> Parser<'t> {
    pub(crate) fn new(tokens: &'t [Token]) -> Self {
        Parser { tokens, i: 0, depth: 0 }
    }

    /// One expression, an optional `;`, then the end.
    pub(crate) fn single(mut self) -> Result<Ast, ParseError> {
        if self.peek() == &Tok::End {
            return Err(self.pos().error("expected an expression, such as Paginate(Collections())"));
        }
        let ast = self.expr()?;
        self.eat(';');
        if self.peek() != &Tok::End {
            let what = describe(self.peek());
            return Err(self.pos().error(format!("expected the end after one expression, found {what}")));
        }
        Ok(ast)
    }

    /// Expressions one after another, `;` between them optional.
    pub(crate) fn script(mut self) -> Result<Vec<Ast>, ParseError> {
        let mut out = Vec::new();
        loop {
            while self.eat(';') {}
            if self.peek() == &Tok::End {
                return Ok(out);
            }
            if out.len() >= SCRIPT_EXPRESSIONS_MAX {
                return Err(self.pos().error(format!("more than {SCRIPT_EXPRESSIONS_MAX} expressions in one script")));
            }
            out.push(self.expr()?);
        }
    }

    fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    fn peek_at(&self, k: usize) -> &Tok {
        // The lexer always ends the list with `End`.
        self.tokens.get(self.i + k).or(self.tokens.last()).map(|t| &t.tok).unwrap_or(&Tok::End)
    }

    fn pos(&self) -> Pos {
        self.tokens.get(self.i).or(self.tokens.last()).map(|t| t.pos).unwrap_or_default()
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.tokens.len() {
            self.i += 1;
        }
        t
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == &Tok::Punct(c) {
            self.i += 1;
            return true;
        }
        false
    }

    fn expect(&mut self, c: char, context: &str) -> Result<(), ParseError> {
        if self.eat(c) {
            return Ok(());
        }
        let what = describe(self.peek());
        Err(self.pos().error(format!("expected `{c}` {context}, found {what}")))
    }

    fn enter(&mut self, pos: Pos) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > NESTING_MAX {
            return Err(pos.error(format!("nested more than {NESTING_MAX} levels deep")));
        }
        Ok(())
    }

    pub(crate) fn expr(&mut self) -> Result<Ast, ParseError> {
        let pos = self.pos();
        self.enter(pos)?;
        let ast = self.primary(pos);
        self.depth -= 1;
        ast
    }

    fn primary(&mut self, pos: Pos) -> Result<Ast, ParseError> {
        match self.next() {
            Tok::Str(s) => Ok(Ast::Str(s, pos)),
            Tok::Num(v, exact) => Ok(Ast::Num(v, exact.and_then(|n| i64::try_from(n).ok()), pos)),
            Tok::Punct(sign @ ('-' | '+')) => match self.next() {
                Tok::Num(v, exact) if sign == '-' => {
                    let neg = exact.and_then(|n| i64::try_from(-i128::from(n)).ok());
                    Ok(Ast::Num(-v, neg, pos))
                }
                Tok::Num(v, exact) => Ok(Ast::Num(v, exact.and_then(|n| i64::try_from(n).ok()), pos)),
                _ => Err(pos.error(format!("`{sign}` goes only before a number literal; use Subtract or Multiply"))),
            },
            Tok::Punct('[') => self.array(pos),
            Tok::Punct('{') => self.object(pos),
            Tok::Punct('(') => self.paren(pos),
            Tok::Ident(name) => self.named(name, pos),
            t => Err(pos.error(format!("expected an expression, found {}", describe(&t)))),
        }
    }

    fn array(&mut self, pos: Pos) -> Result<Ast, ParseError> {
        let mut items = Vec::new();
        while !self.eat(']') {
            if self.peek() == &Tok::Punct(',') {
                return Err(self.pos().error("an array has no empty slots; remove the extra `,`"));
            }
            items.push(self.expr()?);
            if !self.eat(',') {
                self.expect(']', "to close the array")?;
                break;
            }
        }
        Ok(Ast::Array(items, pos))
    }

    fn object(&mut self, pos: Pos) -> Result<Ast, ParseError> {
        let mut fields = Vec::new();
        while !self.eat('}') {
            let key_pos = self.pos();
            let key = match self.next() {
                Tok::Ident(s) | Tok::Str(s) => s,
                Tok::Num(_, Some(n)) => n.to_string(),
                t => return Err(key_pos.error(format!("expected a field name, found {}", describe(&t)))),
            };
            let value = if self.eat(':') {
                self.expr()?
            } else if matches!(self.peek(), Tok::Punct(',' | '}')) {
                // `{x}` is `{x: x}`: useful inside an arrow function whose parameter is x.
                Ast::Ident(key.clone(), key_pos)
            } else {
                return Err(self.pos().error(format!("expected `:` after the field name {key:?}")));
            };
            fields.push((key, value));
            if !self.eat(',') {
                self.expect('}', "to close the object")?;
                break;
            }
        }
        Ok(Ast::Object(fields, pos))
    }

    /// `(` starts either an arrow function's parameters or a parenthesized expression.
    fn paren(&mut self, pos: Pos) -> Result<Ast, ParseError> {
        if let Some(params) = self.arrow_params() {
            return self.arrow_body(params, pos);
        }
        let inner = self.expr()?;
        self.expect(')', "to close the parenthesis")?;
        Ok(inner)
    }

    /// After `(`: `a, b) =>` consumed and the names returned, or nothing consumed.
    fn arrow_params(&mut self) -> Option<Vec<String>> {
        let mut k = 0;
        let mut params = Vec::new();
        loop {
            match self.peek_at(k) {
                Tok::Punct(')') if self.peek_at(k + 1) == &Tok::Arrow => break,
                Tok::Ident(name) if params.len() == k / 2 && k % 2 == 0 => params.push(name.clone()),
                Tok::Punct(',') if k % 2 == 1 => {}
                _ => return None,
            }
            k += 1;
        }
        self.i += k + 2;
        Some(params)
    }

    fn arrow_body(&mut self, params: Vec<String>, pos: Pos) -> Result<Ast, ParseError> {
        let body = if self.peek() == &Tok::Punct('{') { self.block()? } else { self.expr()? };
        Ok(Ast::Arrow { params, body: Box::new(body), pos })
    }

    /// A function body in braces: only `{ return expr }` (an object needs parentheses:
    /// `x => ({a: x})`, as in JavaScript).
    fn block(&mut self) -> Result<Ast, ParseError> {
        let open = self.pos();
        self.expect('{', "to start the function body")?;
        if self.peek() != &Tok::Ident("return".into()) {
            return Err(open.error("a function body in braces must be `{ return … }`; write x => ({…}) for an object"));
        }
        self.i += 1;
        let body = self.expr()?;
        self.eat(';');
        self.expect('}', "after the returned expression")?;
        Ok(body)
    }

    fn named(&mut self, name: String, pos: Pos) -> Result<Ast, ParseError> {
        match name.as_str() {
            "null" => return Ok(Ast::Null(pos)),
            "true" => return Ok(Ast::Bool(true, pos)),
            "false" => return Ok(Ast::Bool(false, pos)),
            "function" => return self.function_expr(pos),
            _ => {}
        }
        if self.peek() == &Tok::Arrow {
            self.i += 1;
            return self.arrow_body(vec![name], pos);
        }
        let name = if name == "q" && self.eat('.') {
            match self.next() {
                Tok::Ident(n) => n,
                t => {
                    return Err(self
                        .pos()
                        .error(format!("expected a function name after `q.`, found {}", describe(&t))))
                }
            }
        } else {
            name
        };
        if !self.eat('(') {
            return Ok(Ast::Ident(name, pos));
        }
        let mut args = Vec::new();
        while !self.eat(')') {
            args.push(self.expr()?);
            if !self.eat(',') {
                self.expect(')', &format!("to close the arguments of {name}"))?;
                break;
            }
        }
        Ok(Ast::Call { name, args, pos })
    }

    /// `function (a, b) { return … }`, the older spelling of an arrow function.
    fn function_expr(&mut self, pos: Pos) -> Result<Ast, ParseError> {
        if matches!(self.peek(), Tok::Ident(_)) {
            self.i += 1;
        }
        self.expect('(', "before the function's parameters")?;
        let mut params = Vec::new();
        while !self.eat(')') {
            match self.next() {
                Tok::Ident(p) => params.push(p),
                t => return Err(self.pos().error(format!("expected a parameter name, found {}", describe(&t)))),
            }
            if !self.eat(',') {
                self.expect(')', "to close the parameters")?;
                break;
            }
        }
        let body = self.block()?;
        Ok(Ast::Arrow { params, body: Box::new(body), pos })
    }
}
