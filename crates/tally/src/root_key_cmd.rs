//! `tally root-key rotate`: replace a cluster's root key, as a logged record every
//! member applies (docs/cluster.md "The root key is cluster data").

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct RootKeyArgs {
    /// Client endpoint of any member, e.g. http://127.0.0.1:8441.
    #[arg(long, default_value = "http://127.0.0.1:8441", global = true)]
    pub endpoint: String,
    /// The current root key.
    #[arg(long, env = "TALLY_ROOT_KEY", hide_env_values = true, global = true)]
    pub root_key: Option<String>,
    /// The CA (PEM) to trust for an https:// --endpoint.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: RootKeyCmd,
}

#[derive(Subcommand, Debug)]
pub enum RootKeyCmd {
    /// Replace the cluster's root key. Every member applies the change in log order; the
    /// old key stops working everywhere. Prints the new key when it generated it.
    Rotate {
        /// The new root key (at least 8 characters); generated when not given.
        #[arg(long, env = "TALLY_NEW_ROOT_KEY", hide_env_values = true)]
        new_root_key: Option<String>,
    },
}

pub fn root_key(a: RootKeyArgs) -> anyhow::Result<()> {
    let key = a.root_key.clone().context("give the current root key with --root-key (or TALLY_ROOT_KEY)")?;
    match a.cmd {
        RootKeyCmd::Rotate { new_root_key } => {
            let generated = new_root_key.is_none();
            let new = new_root_key.unwrap_or_else(generate);
            let body = serde_json::json!({ "root_key": new }).to_string();
            let (status, answer) =
                crate::cluster_cmd::http(&a.endpoint, a.ca.as_deref(), "POST", "/cluster/root-key", &key, &body)?;
            anyhow::ensure!(status == 200, "the member answered HTTP {status}: {answer}");
            println!("{answer}");
            if generated {
                println!("New root key (shown only once; store it safely): {new}");
            }
            Ok(())
        }
    }
}

fn generate() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    format!("tally-root-{}", hex::encode(b))
}
