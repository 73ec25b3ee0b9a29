//! The interactive loop: rustyline for editing and history; input continues over lines
//! while a bracket, string or comment is open; lines starting with `.` are commands.

use std::path::PathBuf;

use rustyline::error::ReadlineError;
use rustyline::history::{DefaultHistory, History};
use rustyline::{Config, Editor};

use super::{Session, ShellArgs};

/// Entries kept in the history file.
const HISTORY_ENTRIES_MAX: usize = 1_000;

const HELP: &str = "\
Type FQL as the JavaScript driver writes it, e.g.
  Paginate(Collections())
  Create(Collection(\"players\"), {data: {name: \"Alice\"}})
  Map(Paginate(Documents(Collection(\"players\"))), x => Get(x))
Input continues on the next line while a bracket is open. Several expressions
separated by ';' run one after another.
  .help        this text
  .load FILE   run the expressions in FILE
  .exit        leave (Ctrl-D also); Ctrl-C drops the current input
History is kept in ~/.tally_shell_history (TALLY_SHELL_HISTORY sets another file,
empty turns it off); entries that mention a secret or password are not saved.";

/// Where history goes: `TALLY_SHELL_HISTORY`, else `~/.tally_shell_history`; none if empty.
fn history_path() -> Option<PathBuf> {
    match std::env::var_os("TALLY_SHELL_HISTORY") {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".tally_shell_history")),
    }
}

/// Whether an entry may hold a credential (a `Login` password, a key's secret): such
/// entries are usable with the arrow keys in this session but never written to disk.
fn sensitive(entry: &str) -> bool {
    let lower = entry.to_lowercase();
    lower.contains("secret") || lower.contains("password")
}

pub(crate) fn run(session: &mut Session, a: &ShellArgs) -> anyhow::Result<()> {
    let config = Config::builder().max_history_size(HISTORY_ENTRIES_MAX)?.auto_add_history(false).build();
    let mut disk = DefaultHistory::with_config(&config);
    let mut ed: Editor<(), DefaultHistory> = Editor::with_config(config)?;
    let path = history_path();
    if let Some(p) = &path {
        // A missing history file is the first run, not an error.
        let _ = ed.load_history(p);
        let _ = disk.load(p);
    }
    let db = a.database.as_deref().map(|d| d.trim_matches('/')).unwrap_or("");
    let prompt = if db.is_empty() { "tally> ".to_string() } else { format!("tally {db}> ") };
    println!("Connected to {} (type .help for help, .exit to leave)", a.endpoint);
    let mut buffer = String::new();
    loop {
        let shown = if buffer.is_empty() { prompt.as_str() } else { "...> " };
        let line = match ed.readline(shown) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        if tally_fqltext::needs_more_input(&buffer) {
            continue;
        }
        let entry = std::mem::take(&mut buffer);
        let trimmed = entry.trim();
        if trimmed.is_empty() {
            continue;
        }
        remember(&mut ed, &mut disk, trimmed, path.as_ref());
        // `.help` is a command; `.5` is a number.
        if let Some(cmd) = trimmed.strip_prefix('.').filter(|c| c.starts_with(|ch: char| ch.is_ascii_alphabetic())) {
            if !command(session, cmd) {
                break;
            }
            continue;
        }
        session.run_script(trimmed);
    }
    Ok(())
}

/// Adds an entry to the session's history, and unless it is sensitive to the file's.
fn remember(ed: &mut Editor<(), DefaultHistory>, disk: &mut DefaultHistory, entry: &str, path: Option<&PathBuf>) {
    let _ = ed.add_history_entry(entry);
    let Some(p) = path.filter(|_| !sensitive(entry)) else { return };
    // Saved after each entry, so a killed shell keeps what came before.
    let _ = disk.add(entry);
    if let Err(e) = disk.save(p) {
        eprintln!("(history not saved to {}: {e})", p.display());
    }
}

/// Runs a `.command`; false to leave.
fn command(session: &mut Session, cmd: &str) -> bool {
    let (name, arg) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
    match name {
        "exit" | "quit" => return false,
        "help" => println!("{HELP}"),
        "load" if !arg.trim().is_empty() => match std::fs::read_to_string(arg.trim()) {
            Ok(src) => {
                session.run_script(&src);
            }
            Err(e) => eprintln!("cannot read {}: {e}", arg.trim()),
        },
        _ => eprintln!("unknown command .{name}; type .help"),
    }
    true
}
