//! The optional config file of `tally serve` (`--config FILE` or `TALLY_CONFIG`).
//!
//! One place for every setting: each `serve` flag has an environment variable
//! (`TALLY_<FLAG>`, shown by `tally serve --help`), and the config file is TOML whose
//! keys are the flag names (`listen = "0.0.0.0:8443"`, `epoch-ms = 5`; `_` may stand for
//! `-`). A key of the file becomes that variable when the variable is not set already, so
//! the order of precedence is: flag, then environment, then file, then default. A key that
//! is no flag is refused, so a typo does not silently leave a default in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Config files larger than this are refused (a settings file is a few hundred bytes).
const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// The config file named on the command line (`--config F`, `--config=F`) or in
/// `TALLY_CONFIG`, for the `serve` subcommand only.
fn config_path(args: &[String]) -> Option<PathBuf> {
    if args.get(1).map(String::as_str) != Some("serve") {
        return None;
    }
    let mut it = args.iter().skip(2);
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("TALLY_CONFIG").map(PathBuf::from)
}

/// Read the config file (if any) into environment variables, before the command line is
/// parsed. `serve` is the subcommand's clap definition: its flags say which keys exist.
pub fn apply(serve: &clap::Command) -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = config_path(&args) else { return Ok(()) };
    let vars = read(&path, serve)?;
    for (var, value) in vars {
        if std::env::var_os(&var).is_none() {
            // Single-threaded here: nothing else reads the environment yet.
            std::env::set_var(var, value);
        }
    }
    Ok(())
}

/// The environment variables a config file sets: flag name -> its variable, value as text.
fn read(path: &Path, serve: &clap::Command) -> anyhow::Result<BTreeMap<String, String>> {
    let len = std::fs::metadata(path).with_context(|| format!("reading the config file {}", path.display()))?.len();
    if len > CONFIG_BYTES_MAX {
        bail!("the config file {} is {len} bytes; at most {CONFIG_BYTES_MAX} are read", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table =
        text.parse().with_context(|| format!("the config file {} is not valid TOML", path.display()))?;
    let known: BTreeMap<String, String> = serve
        .get_arguments()
        .filter_map(|a| Some((a.get_long()?.to_string(), a.get_env()?.to_str()?.to_string())))
        .collect();
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let Some(var) = known.get(&flag) else {
            bail!(
                "the config file {} sets `{key}`, which is not a flag of `tally serve` (see `tally serve --help`)",
                path.display()
            );
        };
        if flag == "config" {
            bail!("the config file {} cannot name another config file", path.display());
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "`{key}` in the config file {} is a {}; give a string, number or boolean",
                path.display(),
                other.type_str()
            ),
        };
        out.insert(var.clone(), text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn serve() -> Command {
        Command::new("serve")
            .arg(Arg::new("listen").long("listen").env("TALLY_LISTEN"))
            .arg(Arg::new("epoch_ms").long("epoch-ms").env("TALLY_EPOCH_MS"))
            .arg(Arg::new("jwks").long("jwks-allow-private").env("TALLY_JWKS_ALLOW_PRIVATE"))
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn keys_become_the_flags_variables() {
        let f = write("listen = \"0.0.0.0:9\"\nepoch_ms = 5\njwks-allow-private = true\n");
        let vars = read(f.path(), &serve()).unwrap();
        assert_eq!(vars["TALLY_LISTEN"], "0.0.0.0:9");
        assert_eq!(vars["TALLY_EPOCH_MS"], "5");
        assert_eq!(vars["TALLY_JWKS_ALLOW_PRIVATE"], "true");
    }

    #[test]
    fn unknown_keys_and_tables_are_refused() {
        let f = write("lisen = \"x\"\n");
        let e = read(f.path(), &serve()).unwrap_err().to_string();
        assert!(e.contains("`lisen`"), "{e}");
        let f = write("[listen]\na = 1\n");
        assert!(read(f.path(), &serve()).unwrap_err().to_string().contains("table"));
        let f = write("listen = \n");
        assert!(read(f.path(), &serve()).unwrap_err().to_string().contains("not valid TOML"));
    }

    #[test]
    fn the_path_comes_from_the_serve_command_line() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(config_path(&args(&["tally", "serve", "--config", "a.toml"])), Some("a.toml".into()));
        assert_eq!(config_path(&args(&["tally", "serve", "--config=b.toml"])), Some("b.toml".into()));
        assert_eq!(config_path(&args(&["tally", "bench", "--config", "a.toml"])), None);
    }
}
