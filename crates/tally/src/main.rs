//! The `tally` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cluster_cmd;
mod demo;
mod shell;

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
        /// Bytes of requests (×8, parsed) and answers in flight before new requests are
        /// refused with 503.
        #[arg(long, default_value_t = tally_server::inflight::INFLIGHT_BYTES_DEFAULT)]
        inflight_bytes_max: u64,
        /// Open client connections at most (0: the file-descriptor limit less 256).
        #[arg(long, default_value_t = 0)]
        connections_max: usize,
        /// Longest a request's headers may take to arrive.
        #[arg(long, default_value_t = 10_000)]
        header_read_timeout_ms: u64,
        /// Longest a request's body may take to arrive.
        #[arg(long, default_value_t = 30_000)]
        body_read_timeout_ms: u64,
        /// A connection with nothing in progress for this long is closed.
        #[arg(long, default_value_t = 120_000)]
        idle_timeout_ms: u64,
        /// A connection whose client has not taken an answer within this long is closed.
        #[arg(long, default_value_t = 60_000)]
        answer_send_timeout_ms: u64,
        /// Concurrent streams per HTTP/2 connection.
        #[arg(long, default_value_t = 200)]
        h2_streams_max: u32,
        #[command(flatten)]
        cluster: cluster_cmd::ClusterFlags,
    },
    /// Start a local cluster of members as separate processes; Ctrl-C stops them all.
    DevCluster(cluster_cmd::DevClusterArgs),
    /// Inspect or change the membership of a running cluster.
    Cluster(cluster_cmd::ClusterArgs),
    /// Benchmark a workload against a Tally server (and PostgreSQL with --postgres).
    Bench(tally_bench::BenchArgs),
    /// Provision a sample app on a running server and print its page's address.
    Demo(demo::DemoArgs),
    /// Query a server in FQL as the JavaScript driver writes it: a REPL, or --eval / --file.
    Shell(shell::ShellArgs),
    /// Print the wire JSON of FQL text (what `tally shell` sends).
    #[command(hide = true)]
    FqlToJson(shell::FqlToJsonArgs),
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
        Cmd::Serve {
            data_dir,
            listen,
            root_key,
            epoch_ms,
            body_bytes_max,
            jwks_allow_private,
            inflight_bytes_max,
            connections_max,
            header_read_timeout_ms,
            body_read_timeout_ms,
            idle_timeout_ms,
            answer_send_timeout_ms,
            h2_streams_max,
            cluster,
        } => {
            let ms = std::time::Duration::from_millis;
            let conn = tally_server::ConnLimits {
                connections_max,
                header_read_timeout: ms(header_read_timeout_ms.max(1)),
                body_read_timeout: ms(body_read_timeout_ms.max(1)),
                idle_timeout: ms(idle_timeout_ms.max(1)),
                answer_send_timeout: ms(answer_send_timeout_ms.max(1)),
                h2_streams_max: h2_streams_max.max(1),
            };
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
                conn,
                inflight_bytes_max,
                cluster,
            }))
        }
        Cmd::Bench(args) => tally_bench::main(args),
        Cmd::Demo(args) => demo::main(args),
        Cmd::DevCluster(args) => cluster_cmd::dev_cluster(args),
        Cmd::Cluster(args) => cluster_cmd::cluster(args),
        Cmd::Shell(args) => shell::shell(args),
        Cmd::FqlToJson(args) => shell::fql_to_json(args),
    }
}
