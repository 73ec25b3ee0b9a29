//! `tally backup` (an online backup of a running single node or cluster member) and `tally restore` (a new
//! data directory from a backup file). The format is `tally_server::backup`'s
//! (docs/backup.md).

use std::path::PathBuf;

use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The running node: http://HOST:PORT or https://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:8443", env = "TALLY_ENDPOINT")]
    pub endpoint: String,
    /// The CA certificate (PEM) to trust for an https:// endpoint (e.g. the ca.pem of
    /// `tally init-certs`); without it, the public web PKI roots.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The root key.
    #[arg(long, env = "TALLY_ROOT_KEY", hide_env_values = true)]
    pub root_key: String,
    /// File to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// A file written by `tally backup`.
    pub file: PathBuf,
    /// The data directory to make (absent or empty).
    #[arg(long)]
    pub data_dir: PathBuf,
}

pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let tmp = args.out.with_extension("partial");
    let mut file = tally_server::backup::file_writer(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The body goes to the file as it arrives: memory stays flat whatever the backup's size.
    let got = rt.block_on(async {
        let ep = tally_bench::client::Endpoint::remote(&args.endpoint, args.ca.as_deref())?;
        let mut conn = tally_bench::client::Conn::connect(ep, &args.root_key).await?;
        conn.get_to("/admin/backup", &mut file).await
    });
    let finished = got.and_then(|(reply, _)| {
        if reply.status != 200 {
            bail!("the node refused the backup (HTTP {}): {}", reply.status, String::from_utf8_lossy(&reply.body));
        }
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        // Checked before it is kept: a backup that does not read back is no backup.
        Ok(tally_server::backup::verify(&tmp)?)
    });
    let b = match finished {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &args.out)?;
    println!(
        "backup of height {} (head {}) written to {}: {} bytes in {:.2} s",
        b.height,
        hex(&b.head),
        args.out.display(),
        b.bytes,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let r = tally_server::backup::restore(&args.file, &args.data_dir)
        .with_context(|| format!("restoring {}", args.file.display()))?;
    let signed =
        if r.members > 0 { format!(", signed by member(s) {:?} of {}", r.signed_by, r.members) } else { String::new() };
    println!(
        "restored height {} (head {}{signed}) into {} in {:.2} s",
        r.height,
        hex(&r.head),
        args.data_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
