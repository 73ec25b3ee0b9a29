//! The `tally` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cluster_cmd;

#[derive(Parser)]
#[command(name = "tally", version, about = "Tally: a serverless distributed ledger database speaking FQL v4")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a server on a local data directory: a single node, or with --node-id and
    /// --cluster a member of a replicated cluster.
    Serve {
        #[arg(long, default_value = "./tally-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Secret of the root database's admin key (else TALLY_ROOT_KEY, else generated once).
        #[arg(long, env = "TALLY_ROOT_KEY", hide_env_values = true)]
        root_key: Option<String>,
        /// How long an epoch batch stays open after its first transaction.
        #[arg(long, default_value_t = 10)]
        epoch_ms: u64,
        /// Largest request body accepted.
        #[arg(long, default_value_t = 16 << 20)]
        body_bytes_max: usize,
        /// Let access providers' `jwks_uri` reach loopback, private and link-local
        /// addresses, and plain http (tests, identity providers on a private network).
        /// Off by default: any tenant admin chooses a jwks_uri, so the server would
        /// otherwise fetch from inside its own network on their behalf.
        #[arg(long, env = "TALLY_JWKS_ALLOW_PRIVATE")]
        jwks_allow_private: bool,
        #[command(flatten)]
        cluster: cluster_cmd::ClusterFlags,
    },
    /// Start a local cluster of members as separate processes; Ctrl-C stops them all.
    DevCluster(cluster_cmd::DevClusterArgs),
    /// Inspect or change the membership of a running cluster.
    Cluster(cluster_cmd::ClusterArgs),
    /// Benchmark a workload against a Tally server (and PostgreSQL with --postgres).
    Bench(tally_bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG").unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Serve { data_dir, listen, root_key, epoch_ms, body_bytes_max, jwks_allow_private, cluster } => {
            let cluster = cluster.options()?;
            // Read-only queries evaluate on blocking threads; give them the executor's
            // stack so a query that is valid there is valid here.
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(512 << 20).build()?;
            rt.block_on(tally_server::serve(tally_server::ServeConfig {
                data_dir,
                listen,
                root_key,
                epoch_ms,
                body_bytes_max,
                jwks_allow_private,
                cluster,
            }))
        }
        Cmd::Bench(args) => tally_bench::main(args),
        Cmd::DevCluster(args) => cluster_cmd::dev_cluster(args),
        Cmd::Cluster(args) => cluster_cmd::cluster(args),
    }
}
