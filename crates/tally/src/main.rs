//! The `tally` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

mod backup_cmd;
mod certs_cmd;
mod cluster_cmd;
mod config;
mod demo;
mod fauna;
mod root_key_cmd;
mod shell;
mod transfer;
mod verify;

/// jemalloc instead of glibc's malloc: under 64 clients glibc's free lists (`_int_free`,
/// `malloc_consolidate`) took about a fifth of the server's CPU (docs/benchmarks.md, "The
/// allocator under group commit"; mimalloc was as fast but kept up to three times the
/// memory under the resource attacks). The server's trimmer gives freed pages back when
/// quiet ([`release_memory`]).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc returns a freed page to the OS only some seconds later, as the arena that
/// holds it is used again (its decay), and an idle server's arenas are not: after a burst
/// of big answers the memory stayed resident. Purging every arena gives it back at once.
fn release_memory() {
    // A refusal leaves the pages resident, no worse than before (the test below checks
    // jemalloc accepts the control).
    let _ = purge_every_arena();
}

/// jemalloc's `arena.<MALLCTL_ARENAS_ALL>.purge`, a control that takes and gives nothing;
/// its status (0: done).
fn purge_every_arena() -> i32 {
    let name = b"arena.4096.purge\0";
    // SAFETY: the name is NUL-terminated, and a control without value is called with null
    // pointers and length 0, as jemalloc's mallctl documents; a purge only touches
    // jemalloc's own unused pages.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    }
}

#[cfg(test)]
mod allocator_tests {
    #[test]
    fn jemalloc_accepts_the_purge_of_every_arena() {
        let big = vec![1u8; 64 << 20];
        drop(big);
        assert_eq!(super::purge_every_arena(), 0);
    }
}

#[derive(Parser)]
#[command(name = "tally", version, about = "Tally: a serverless distributed ledger database speaking FQL v4")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start; boxing the serve flags buys nothing
enum Cmd {
    /// Run a server on a local data directory: a single node, or with --node-id and
    /// --cluster a member of a replicated cluster.
    ///
    /// Every flag can also be set by its environment variable (shown below) or in the
    /// TOML file named by --config (keys are the flag names: `epoch-ms = 5`); a flag
    /// wins over the environment, which wins over the file.
    Serve {
        /// TOML file of settings (keys: the flag names below).
        #[arg(long, env = "TALLY_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, default_value = "./tally-data", env = "TALLY_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443", env = "TALLY_LISTEN")]
        listen: SocketAddr,
        /// Secret of the root database's admin key (else TALLY_ROOT_KEY, else generated once).
        /// On a cluster member it is optional (with mutual TLS between members): the root
        /// key is cluster data, and this flag only proposes it when the cluster has none.
        #[arg(long, env = "TALLY_ROOT_KEY", hide_env_values = true)]
        root_key: Option<String>,
        /// How long an epoch batch stays open after its first transaction, to gather more.
        /// Default: 0 on a single node (group commit: a batch closes as soon as the input
        /// log is free, so the inputs that arrived during one append form the next batch),
        /// 10 on a cluster member.
        #[arg(long, env = "TALLY_EPOCH_MS")]
        epoch_ms: Option<u64>,
        /// Largest request body accepted.
        #[arg(long, default_value_t = 16 << 20, env = "TALLY_BODY_BYTES_MAX")]
        body_bytes_max: usize,
        /// Let access providers' `jwks_uri` reach loopback, private and link-local
        /// addresses, and plain http (tests, identity providers on a private network).
        /// Off by default: any tenant admin chooses a jwks_uri, so the server would
        /// otherwise fetch from inside its own network on their behalf.
        #[arg(long, env = "TALLY_JWKS_ALLOW_PRIVATE")]
        jwks_allow_private: bool,
        /// Bytes of requests (×8, parsed) and answers in flight before new requests are
        /// refused with 503.
        #[arg(long, default_value_t = tally_server::inflight::INFLIGHT_BYTES_DEFAULT, env = "TALLY_INFLIGHT_BYTES_MAX")]
        inflight_bytes_max: u64,
        /// FQL requests in progress at once, server-wide (read, evaluated or waiting for
        /// the log); past it a request is answered 503 at once.
        #[arg(long, default_value_t = tally_server::inflight::REQUESTS_DEFAULT_MAX, env = "TALLY_REQUESTS_MAX")]
        requests_max: usize,
        /// Open client connections at most (0: the file-descriptor limit less 256).
        #[arg(long, default_value_t = 0, env = "TALLY_CONNECTIONS_MAX")]
        connections_max: usize,
        /// Longest a request's headers may take to arrive.
        #[arg(long, default_value_t = 10_000, env = "TALLY_HEADER_READ_TIMEOUT_MS")]
        header_read_timeout_ms: u64,
        /// Longest a request's body may take to arrive.
        #[arg(long, default_value_t = 30_000, env = "TALLY_BODY_READ_TIMEOUT_MS")]
        body_read_timeout_ms: u64,
        /// A connection with nothing in progress for this long is closed.
        #[arg(long, default_value_t = 120_000, env = "TALLY_IDLE_TIMEOUT_MS")]
        idle_timeout_ms: u64,
        /// A connection whose client has not taken an answer within this long is closed.
        #[arg(long, default_value_t = 60_000, env = "TALLY_ANSWER_SEND_TIMEOUT_MS")]
        answer_send_timeout_ms: u64,
        /// Concurrent streams per HTTP/2 connection.
        #[arg(long, default_value_t = 200, env = "TALLY_H2_STREAMS_MAX")]
        h2_streams_max: u32,
        /// Serve clients over TLS with this PEM certificate chain (with --tls-key);
        /// reloaded on SIGHUP and when the file changes.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// How often to check --tls-cert/--tls-key for changes (0: only on SIGHUP).
        #[arg(long, default_value_t = 1000, hide = true)]
        tls_reload_poll_ms: u64,
        /// Also serve GET /metrics and /health here, WITHOUT authentication (bind it to a
        /// private address); on the client port they need the root key.
        #[arg(long, env = "TALLY_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// What becomes of input log segments once the state store has made every batch in
        /// them durable (single node): `all` keeps them (the whole history `tally verify`
        /// replays), `checkpoint` removes them, `archive:DIR` moves them into DIR. A cluster
        /// member's Raft log is purged after each snapshot whatever this says.
        #[arg(long, default_value = "all", env = "TALLY_LOG_RETAIN")]
        log_retain: tally_server::Retain,
        /// Size at which an input log segment is closed and the next one begun, in MiB.
        #[arg(long, default_value_t = tally_server::SEGMENT_BYTES_DEFAULT >> 20, env = "TALLY_LOG_SEGMENT_MIB",
              value_parser = clap::value_parser!(u64).range(1..=4096))]
        log_segment_mib: u64,
        /// Input log segment size in bytes, overriding --log-segment-mib (tests).
        #[arg(long, hide = true)]
        log_segment_bytes: Option<u64>,
        /// Apply logged batches that another build sequenced (under other executor rules)
        /// with this build's rules, instead of stopping with what to do. Only for a log tail
        /// that no build of its own rules can apply: its results may differ from the ones
        /// that build acknowledged. Every member of a cluster must then use it alike.
        #[arg(long)]
        apply_other_rules: bool,
        /// Tenant databases with a metrics label of their own; later ones count as "other".
        #[arg(long, env = "TALLY_METRICS_TENANTS_MAX", default_value_t = tally_server::metrics::TENANTS_MAX_DEFAULT)]
        metrics_tenants_max: usize,
        #[command(flatten)]
        cluster: cluster_cmd::ClusterFlags,
    },
    /// Start a local cluster of members as separate processes; Ctrl-C stops them all.
    DevCluster(cluster_cmd::DevClusterArgs),
    /// Inspect or change the membership of a running cluster.
    Cluster(cluster_cmd::ClusterArgs),
    /// Rotate a cluster's root key (a logged change every member applies).
    RootKey(root_key_cmd::RootKeyArgs),
    /// Benchmark a workload against a Tally server (and PostgreSQL with --postgres).
    Bench(tally_bench::BenchArgs),
    /// Resource figures: restart replay after a write flood and kill -9 (`replay`), memory
    /// given back after a burst of big answers (`memory`).
    BenchResources(tally_bench::resources::ResourceArgs),
    /// Verify a ledger offline: a data directory from genesis, or a saved proof against a saved head.
    Verify(verify::VerifyArgs),
    /// Provision a sample app on a running server and print its page's address.
    Demo(demo::DemoArgs),
    /// Write a database (children, schema, documents with their history; keys without
    /// secrets) as JSON lines (docs/export.md).
    Export(transfer::ExportArgs),
    /// Load a `tally export` file, or a Fauna snapshot export, into a database.
    Import(transfer::ImportArgs),
    /// Take an online backup of a running single node or cluster member (docs/backup.md).
    Backup(backup_cmd::BackupArgs),
    /// Make a data directory from a backup file.
    Restore(backup_cmd::RestoreArgs),
    /// Query a server in FQL as the JavaScript driver writes it: a REPL, or --eval / --file.
    Shell(shell::ShellArgs),
    /// Print the wire JSON of FQL text (what `tally shell` sends).
    #[command(hide = true)]
    FqlToJson(shell::FqlToJsonArgs),
}

fn main() -> anyhow::Result<()> {
    tally_server::inflight::set_memory_release(release_memory);
    if let Some(serve) = Cli::command().find_subcommand("serve") {
        config::apply(serve)?;
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG").unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Serve {
            config: _,
            data_dir,
            listen,
            root_key,
            epoch_ms,
            body_bytes_max,
            jwks_allow_private,
            inflight_bytes_max,
            requests_max,
            connections_max,
            header_read_timeout_ms,
            body_read_timeout_ms,
            idle_timeout_ms,
            answer_send_timeout_ms,
            h2_streams_max,
            tls_cert,
            tls_key,
            tls_reload_poll_ms,
            metrics_listen,
            metrics_tenants_max,
            log_retain,
            log_segment_mib,
            log_segment_bytes,
            apply_other_rules,
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
                requests_max: requests_max.max(1),
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
                tls: tls_cert.zip(tls_key).map(|(cert, key)| tally_server::tls::TlsFiles {
                    cert,
                    key,
                    reload_poll: (tls_reload_poll_ms > 0).then(|| ms(tls_reload_poll_ms)),
                }),
                metrics_listen,
                metrics_tenants_max,
                log: tally_server::LogConfig {
                    retain: log_retain,
                    segment_bytes_max: log_segment_bytes.unwrap_or(log_segment_mib << 20).max(1),
                },
                apply_other_rules,
            }))
        }
        Cmd::Bench(args) => tally_bench::main(args),
        Cmd::BenchResources(args) => tally_bench::resources::main(args),
        Cmd::Demo(args) => demo::main(args),
        Cmd::Export(args) => transfer::export(args),
        Cmd::Import(args) => transfer::import(args),
        Cmd::Backup(args) => backup_cmd::backup(args),
        Cmd::Restore(args) => backup_cmd::restore(args),
        Cmd::DevCluster(args) => cluster_cmd::dev_cluster(args),
        Cmd::Cluster(args) => cluster_cmd::cluster(args),
        Cmd::RootKey(args) => root_key_cmd::root_key(args),
        Cmd::Verify(args) => verify::main(args),
        Cmd::Shell(args) => shell::shell(args),
        Cmd::FqlToJson(args) => shell::fql_to_json(args),
    }
}
