//! The same `transfer` workload against PostgreSQL, the way an application writes it,
//! in PostgreSQL's two best modes for it (each run in turn; the comparison takes the
//! faster):
//!
//! - [`Isolation::Serializable`]: `BEGIN ISOLATION LEVEL SERIALIZABLE`, read both
//!   balances, check funds, two `UPDATE`s and an `INSERT` of the transfer record,
//!   `COMMIT`; a serialization failure (40001) or a deadlock (40P01) rolls back and
//!   retries the whole transaction, and is counted.
//! - [`Isolation::ReadCommittedForUpdate`]: `BEGIN` (READ COMMITTED), lock every account
//!   the transaction touches with one `SELECT … ORDER BY id FOR UPDATE` (in id order, so
//!   transactions never deadlock), then the same checks, `UPDATE`s and `INSERT`. Waits
//!   on row locks instead of aborting; a conflict would still be retried and counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use crate::stats::{Outcome, Recorder};
use crate::tally::INITIAL_BALANCE;

/// Attempts of one transaction before it is counted as an error.
const ATTEMPTS_MAX: u64 = 10_000;

/// A PostgreSQL error with the server's message (tokio-postgres alone says "db error").
fn pg_err(e: tokio_postgres::Error) -> anyhow::Error {
    match e.as_db_error() {
        Some(d) => anyhow::anyhow!("postgres: {}: {} ({})", d.severity(), d.message(), d.code().code()),
        None => anyhow::anyhow!("postgres: {e}"),
    }
}

async fn connect(conn_str: &str) -> anyhow::Result<Client> {
    let (client, conn) = tokio_postgres::connect(conn_str, NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL ({conn_str})"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Loopback or a unix socket only: the benchmark never drives a remote server.
pub fn check_local(conn_str: &str) -> anyhow::Result<()> {
    for part in conn_str.split_whitespace() {
        if let Some(h) = part.strip_prefix("host=") {
            let local = h.starts_with('/')
                || h == "localhost"
                || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !local {
                anyhow::bail!("PostgreSQL host {h:?}: only loopback addresses or unix sockets are benchmarked");
            }
        }
    }
    Ok(())
}

/// Fresh tables with `accounts` accounts; returns the seconds it took and the database size.
pub async fn load(conn_str: &str, accounts: u64) -> anyhow::Result<(f64, u64)> {
    let c = connect(conn_str).await?;
    let t0 = Instant::now();
    c.batch_execute(
        "DROP TABLE IF EXISTS bench_transfers; DROP TABLE IF EXISTS bench_accounts;
         CREATE TABLE bench_accounts (id bigint PRIMARY KEY, balance bigint NOT NULL, bucket int NOT NULL);
         CREATE TABLE bench_transfers (id bigserial PRIMARY KEY, from_id bigint NOT NULL, to_id bigint NOT NULL,
                                       amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());",
    )
    .await
    .map_err(pg_err)?;
    c.execute(
        "INSERT INTO bench_accounts SELECT g, $1, g % 100 FROM generate_series(1, $2::bigint) g",
        &[&INITIAL_BALANCE, &(accounts as i64)],
    )
    .await
    .map_err(pg_err)?;
    // Separate statements: VACUUM refuses to run in the implicit transaction of a batch.
    c.batch_execute("VACUUM ANALYZE bench_accounts").await.map_err(pg_err)?;
    c.batch_execute("CHECKPOINT").await.map_err(pg_err)?;
    let secs = t0.elapsed().as_secs_f64();
    let size: i64 = c.query_one("SELECT pg_total_relation_size('bench_accounts')", &[]).await.map_err(pg_err)?.get(0);
    Ok((secs, size as u64))
}

/// The process id of PostgreSQL's postmaster (the parent of this connection's backend),
/// when it runs on this machine and /proc shows it: its CPU is the server's.
pub async fn postmaster_pid(conn_str: &str) -> Option<u32> {
    let c = connect(conn_str).await.ok()?;
    let backend: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.ok()?.get(0);
    crate::server::parent_pid(u32::try_from(backend).ok()?)
}

/// `(WAL position in bytes, database size in bytes)`.
pub async fn sizes(conn_str: &str) -> anyhow::Result<(u64, i64)> {
    let c = connect(conn_str).await?;
    let row = c
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, pg_database_size(current_database())",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let wal: i64 = row.get(0);
    Ok((wal as u64, row.get(1)))
}

/// How a transfer transaction protects itself from concurrent ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    Serializable,
    ReadCommittedForUpdate,
}

impl Isolation {
    pub const ALL: [Isolation; 2] = [Isolation::Serializable, Isolation::ReadCommittedForUpdate];

    /// The `via` column of the benchmark's table.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Serializable => "ser",
            Isolation::ReadCommittedForUpdate => "rc-fu",
        }
    }
}

struct Stmts {
    select: Statement,
    /// Read committed: lock the transaction's accounts (`$1`: their ids) in id order.
    lock: Statement,
    update: Statement,
    insert: Statement,
}

enum TxnEnd {
    Committed,
    Insufficient,
}

/// One attempt of a batch of transfers in one transaction.
async fn attempt(
    c: &Client,
    s: &Stmts,
    iso: Isolation,
    items: &[(i64, i64, i64)],
) -> Result<TxnEnd, tokio_postgres::Error> {
    // Read committed: every account of the batch locked up front, in id order, and the
    // balances then kept here as the transfers move them.
    let mut locked: Vec<(i64, i64)> = Vec::new();
    match iso {
        Isolation::Serializable => c.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE").await?,
        Isolation::ReadCommittedForUpdate => {
            c.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED").await?;
            let mut ids: Vec<i64> = items.iter().flat_map(|&(f, t, _)| [f, t]).collect();
            ids.sort_unstable();
            ids.dedup();
            let rows = c.query(&s.lock, &[&ids]).await?;
            locked = rows.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1))).collect();
        }
    }
    for &(from, to, amount) in items {
        let (bf, bt) = if iso == Isolation::Serializable {
            let rows = c.query(&s.select, &[&from, &to]).await?;
            let bal = |id: i64| rows.iter().find(|r| r.get::<_, i64>(0) == id).map(|r| r.get::<_, i64>(1)).unwrap_or(0);
            (bal(from), bal(to))
        } else {
            let bal = |id: i64| locked.iter().find(|(i, _)| *i == id).map(|(_, b)| *b).unwrap_or(0);
            (bal(from), bal(to))
        };
        if bf < amount {
            c.batch_execute("ROLLBACK").await?;
            return Ok(TxnEnd::Insufficient);
        }
        // Rows are updated in id order, as a careful application does: opposite orders
        // deadlock under contention, and PostgreSQL takes deadlock_timeout (1 s) to notice.
        let mut updates = [(from, bf - amount), (to, bt + amount)];
        updates.sort_unstable();
        for (id, balance) in updates {
            c.execute(&s.update, &[&balance, &id]).await?;
            if let Some(l) = locked.iter_mut().find(|(i, _)| *i == id) {
                l.1 = balance;
            }
        }
        c.execute(&s.insert, &[&from, &to, &amount]).await?;
    }
    c.batch_execute("COMMIT").await?;
    Ok(TxnEnd::Committed)
}

fn is_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// Drive `clients` connections of transfers until `deadline`.
#[allow(clippy::too_many_arguments)]
pub async fn drive(
    conn_str: &str,
    iso: Isolation,
    accounts: u64,
    clients: usize,
    batch: usize,
    rec: Arc<Recorder>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let accounts = accounts.max(2) as i64;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let conn_str = conn_str.to_string();
        let rec = rec.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(&conn_str).await?;
            let s = Stmts {
                select: c.prepare("SELECT id, balance FROM bench_accounts WHERE id = $1 OR id = $2").await?,
                lock: c
                    .prepare("SELECT id, balance FROM bench_accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                    .await?,
                update: c.prepare("UPDATE bench_accounts SET balance = $1 WHERE id = $2").await?,
                insert: c.prepare("INSERT INTO bench_transfers (from_id, to_id, amount) VALUES ($1, $2, $3)").await?,
            };
            let mut rng = StdRng::seed_from_u64(0x7a11_0000 + i as u64);
            while Instant::now() < deadline {
                let items: Vec<(i64, i64, i64)> = (0..batch.max(1))
                    .map(|_| {
                        let a = rng.gen_range(1..=accounts);
                        let mut b = rng.gen_range(1..accounts);
                        if b >= a {
                            b += 1;
                        }
                        (a, b, rng.gen_range(1..=10))
                    })
                    .collect();
                let began = Instant::now();
                let mut conflicts = 0u64;
                let outcome = loop {
                    match attempt(&c, &s, iso, &items).await {
                        Ok(TxnEnd::Committed) => break Some(Outcome::Ok),
                        Ok(TxnEnd::Insufficient) => break Some(Outcome::Insufficient),
                        Err(e) if is_conflict(&e) && conflicts < ATTEMPTS_MAX => {
                            conflicts += 1;
                            let _ = c.batch_execute("ROLLBACK").await;
                            if Instant::now() >= deadline {
                                // Still conflicting when the run ends: not a result.
                                break None;
                            }
                        }
                        Err(e) => {
                            rec.note_error(format!("{:#}", pg_err(e)));
                            let _ = c.batch_execute("ROLLBACK").await;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            break Some(Outcome::Error);
                        }
                    }
                };
                match outcome {
                    Some(outcome) => rec.record(began, items.len() as u64, outcome, conflicts, conflicts),
                    None => rec.abandoned(conflicts),
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("postgres client task")??;
    }
    Ok(())
}
