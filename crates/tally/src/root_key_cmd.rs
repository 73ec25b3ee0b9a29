//! `tally root-key rotate`: replace a cluster's root key, as a logged record every
//! member applies (docs/cluster.md "The root key is cluster data").

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct RootKeyArgs {
    #[command(flatten)]
    pub member: crate::cluster_cmd::MemberArgs,
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
    let key = a.member.root_key.clone().context("give the current root key with --root-key (or TALLY_ROOT_KEY)")?;
    match a.cmd {
        RootKeyCmd::Rotate { new_root_key } => {
            let generated = new_root_key.is_none();
            let new = new_root_key.unwrap_or_else(|| generate("tally-root-"));
            let body = serde_json::json!({ "root_key": new }).to_string();
            let (status, answer) = crate::cluster_cmd::http(
                &a.member.endpoint,
                a.member.ca.as_deref(),
                "POST",
                "/cluster/root-key",
                &key,
                &body,
            )?;
            anyhow::ensure!(status == 200, "the member answered HTTP {status}: {answer}");
            println!("{answer}");
            if generated {
                println!("New root key (shown only once; store it safely): {new}");
            }
            Ok(())
        }
    }
}

/// A new root key: `prefix` and 24 random bytes in hex.
pub fn generate(prefix: &str) -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}
