//! `tally shell`: FQL in the JavaScript driver's syntax against a running server — a REPL
//! (history, multi-line input, `.help`, `.exit`), or `--eval EXPR` / `--file F` for
//! scripts. Text is translated by tally-fqltext; answers are printed in the same syntax.
//! Also the hidden `tally fql-to-json`, the translation alone (for tests and tooling).

mod client;
mod repl;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value as Json};

use client::{Answer, Client};

#[derive(Args, Debug)]
pub struct ShellArgs {
    /// Client endpoint of a Tally server: http://HOST:PORT or https://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:8443", env = "TALLY_ENDPOINT")]
    pub endpoint: String,
    /// The CA certificate (PEM) to trust for an https:// endpoint (e.g. the ca.pem of
    /// `tally init-certs`); without it, the public web PKI roots.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The secret to run queries with. Prefer the environment (TALLY_SECRET, FAUNA_SECRET,
    /// TALLY_ROOT_KEY) or the prompt: a command line stays in your shell's history.
    #[arg(long)]
    pub secret: Option<String>,
    /// Work inside this child database (`parent/child`): the secret, which must be the
    /// root key or a key of an ancestor, is scoped as `secret:parent/child:ROLE`.
    #[arg(long)]
    pub database: Option<String>,
    /// The role for --database: admin, server, server-readonly or client.
    #[arg(long, default_value = "admin", requires = "database")]
    pub role: String,
    /// Run one expression (or several, separated by `;`), print the answers and exit.
    #[arg(long, conflicts_with = "file")]
    pub eval: Option<String>,
    /// Run the expressions in this file (`-`: standard input) one after another; stops at
    /// the first error.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print answers as the server's wire JSON instead of FQL.
    #[arg(long)]
    pub json: bool,
    /// Each query's deadline (sent as X-Query-Timeout).
    #[arg(long, default_value_t = 60_000)]
    pub timeout_ms: u64,
}

#[derive(Args, Debug)]
pub struct FqlToJsonArgs {
    /// Read a JSON array of texts from standard input and print a JSON array with, for
    /// each, `{"wire": …}` or `{"error": {"line", "column", "message"}}`.
    #[arg(long)]
    pub batch: bool,
    /// The text to translate (else standard input).
    pub expr: Option<String>,
}

/// Exit status of a run whose query or text failed.
pub const EXIT_QUERY_FAILED: i32 = 1;

pub fn fql_to_json(a: FqlToJsonArgs) -> anyhow::Result<()> {
    let input = match a.expr {
        Some(e) => e,
        None => read_stdin()?,
    };
    if !a.batch {
        match tally_fqltext::parse(&input) {
            Ok(w) => println!("{w}"),
            Err(e) => {
                eprintln!("{}", describe_parse_error(&input, &e));
                std::process::exit(EXIT_QUERY_FAILED);
            }
        }
        return Ok(());
    }
    let texts: Vec<String> = serde_json::from_str(&input).context("--batch reads a JSON array of strings")?;
    let out: Vec<Json> = texts
        .iter()
        .map(|t| match tally_fqltext::parse(t) {
            Ok(w) => json!({ "wire": w }),
            Err(e) => json!({"error": {"line": e.line, "column": e.column, "message": e.message}}),
        })
        .collect();
    println!("{}", Json::Array(out));
    Ok(())
}

fn read_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin().take(tally_fqltext::SOURCE_BYTES_MAX as u64 + 1).read_to_string(&mut s)?;
    Ok(s)
}

pub fn shell(a: ShellArgs) -> anyhow::Result<()> {
    let secret = scoped_secret(&a)?;
    let client = Client::new(&a.endpoint, a.ca.as_deref(), &secret, Duration::from_millis(a.timeout_ms.max(1)))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut session = Session { client, rt, json: a.json };
    let ok = if let Some(src) = &a.eval {
        session.run_script(src)
    } else if let Some(path) = &a.file {
        let src = if path.as_os_str() == "-" {
            read_stdin()?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        session.run_script(&src)
    } else if !std::io::stdin().is_terminal() {
        session.run_script(&read_stdin()?)
    } else {
        repl::run(&mut session, &a)?;
        true
    };
    if !ok {
        std::process::exit(EXIT_QUERY_FAILED);
    }
    Ok(())
}

/// The secret to send: from the flag, the environment or a hidden prompt (never echoed,
/// never in the REPL's history), scoped to `--database` when given.
fn scoped_secret(a: &ShellArgs) -> anyhow::Result<String> {
    let from_env = ["TALLY_SECRET", "FAUNA_SECRET", "TALLY_ROOT_KEY"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    let secret = match a.secret.clone().or(from_env) {
        Some(s) => s,
        None if std::io::stdin().is_terminal() => {
            rpassword::prompt_password("Secret: ").context("reading the secret")?
        }
        None => bail!("no secret: set TALLY_SECRET (or pass --secret)"),
    };
    let secret = secret.trim().to_string();
    if secret.is_empty() {
        bail!("the secret is empty");
    }
    let Some(db) = &a.database else { return Ok(secret) };
    let path = db.trim_matches('/');
    if path.is_empty() || path.split('/').any(|p| p.is_empty() || p.contains(':')) {
        bail!("--database {db:?}: expected a path of database names such as parent/child");
    }
    Ok(format!("{secret}:{path}:{}", a.role))
}

pub(crate) struct Session {
    client: Client,
    rt: tokio::runtime::Runtime,
    json: bool,
}

impl Session {
    /// Runs every expression of `src` in order, printing each answer; false after the
    /// first one that fails (the rest are not sent), or if the text does not parse.
    pub(crate) fn run_script(&mut self, src: &str) -> bool {
        let exprs = match tally_fqltext::parse_script(src) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("{}", describe_parse_error(src, &e));
                return false;
            }
        };
        let many = exprs.len() > 1;
        for (line, expr) in exprs {
            if !self.run(&expr, many.then_some(line)) {
                return false;
            }
        }
        true
    }

    fn run(&mut self, expr: &Json, line: Option<usize>) -> bool {
        // Ctrl-C while a query runs drops it (the REPL lives on; a script stops there).
        let client = &mut self.client;
        let raced = self.rt.block_on(async {
            tokio::select! {
                r = client.query(expr) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        let answer = raced.unwrap_or_else(|| {
            self.client.disconnect();
            Err(anyhow::anyhow!("interrupted; the server may still run the query"))
        });
        let at = line.map(|l| format!(" (the expression on line {l})")).unwrap_or_default();
        match answer {
            Ok(Answer::Ok(v)) => {
                println!("{}", if self.json { v.to_string() } else { tally_fqltext::format(&v) });
                true
            }
            Ok(Answer::Err(status, errors)) => {
                eprintln!("{}", describe_errors(status, &errors, &at));
                false
            }
            Ok(Answer::Raw(200, body)) => {
                println!("{body}");
                true
            }
            Ok(Answer::Raw(status, body)) => {
                eprintln!("Error{at}: HTTP {status}: {body}");
                false
            }
            Err(e) => {
                eprintln!("Error{at}: {e:#}");
                false
            }
        }
    }
}

/// `line L, column C: message`, then the line itself with a caret under the column.
pub(crate) fn describe_parse_error(src: &str, e: &tally_fqltext::ParseError) -> String {
    let text = src.lines().nth(e.line.saturating_sub(1)).unwrap_or_default();
    let shown: String = text.chars().take(200).collect();
    let caret = " ".repeat(e.column.saturating_sub(1).min(200));
    format!("Syntax error: {e}\n  {shown}\n  {caret}^")
}

/// A refused query's errors: code, description, the position in the query, validation
/// failures, and (for a failing `Call`) the errors inside the function, indented.
fn describe_errors(status: u16, errors: &Json, at: &str) -> String {
    let Some(list) = errors.as_array().filter(|l| !l.is_empty()) else {
        return format!("Error{at}: HTTP {status}");
    };
    let mut out: Vec<String> = list.iter().map(|e| describe_error(e, &format!("Error{at}: "), 0)).collect();
    if status == 401 {
        out.push("  (check the secret: TALLY_SECRET, --secret, and --database)".into());
    }
    out.join("\n")
}

/// Levels of `cause` shown (a UDF calling a UDF…).
const CAUSE_DEPTH_MAX: usize = 8;

fn describe_error(e: &Json, head: &str, depth: usize) -> String {
    let pad = "  ".repeat(depth);
    let code = e["code"].as_str().unwrap_or("error");
    let desc = e["description"].as_str().unwrap_or_default();
    let mut s = format!("{pad}{head}[{code}] {desc}");
    if let Some(pos) = e["position"].as_array().filter(|p| !p.is_empty()) {
        let path: Vec<String> = pos.iter().map(|p| p.to_string()).collect();
        s.push_str(&format!("\n{pad}  at position [{}]", path.join(", ")));
    }
    for f in e["failures"].as_array().into_iter().flatten() {
        let field: Vec<String> = f["field"].as_array().into_iter().flatten().map(|p| p.to_string()).collect();
        let (fc, fd) = (f["code"].as_str().unwrap_or_default(), f["description"].as_str().unwrap_or_default());
        s.push_str(&format!("\n{pad}  field [{}]: [{fc}] {fd}", field.join(", ")));
    }
    if depth < CAUSE_DEPTH_MAX {
        for c in e["cause"].as_array().into_iter().flatten() {
            s.push('\n');
            s.push_str(&describe_error(c, "caused by: ", depth + 1));
        }
    }
    s
}
