//! What the executor's thread spends on a transfer, without the server around it (prints
//! figures; not run by CI):
//! `cargo test --release -p tally-exec --test exec_cost -- --ignored --nocapture`.
//!
//! `tally bench transfer`'s schema and transaction on the server's store (redb behind the
//! write-behind queue, whose flusher runs on its own thread), applied by the machine in
//! batches as the log hands them over: one transfer per input, and 100 per input through
//! `Map`. Each input comes with its parsed query (`record::Predecoded`), made before the
//! timing starts, as the receiving node's request threads hand it to a single node's
//! executor, which then decodes nothing. Only the executor's own thread is timed (its CPU
//! time, so the flusher and whatever else the machine runs are left out): the tool for
//! comparing two builds of the executor side by side, a noisy machine's load moving it
//! less than a whole server's throughput (still, on the shared 2-core machine runs of one
//! build differ by up to 10 %: alternate the builds several times).

mod common;
use common::{account, input, obj, predecoded, TransferStore};

/// The server's allocator (the `tally` binary's): with glibc's malloc, its free lists
/// were a sixth of this test's executor time, a cost the server does not have.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use serde_json::json;

/// The benchmark's transfer body (`tally-bench` `fql::transfer_body`), with `from`, `to`
/// and `amount` as expressions.
fn transfer_body(from: serde_json::Value, to: serde_json::Value, amount: serde_json::Value) -> serde_json::Value {
    let bal = |v: &str| json!({"select": ["data", "balance"], "from": {"var": v}});
    json!({
        "let": [{"a": {"get": from.clone()}}, {"b": {"get": to.clone()}}],
        "in": {
            "if": {"lt": [bal("a"), amount.clone()]},
            "then": "insufficient funds",
            "else": {"do": [
                {"update": from.clone(), "params": obj(json!({"data": obj(json!({"balance": {"subtract": [bal("a"), amount.clone()]}}))}))},
                {"update": to.clone(), "params": obj(json!({"data": obj(json!({"balance": {"add": [bal("b"), amount.clone()]}}))}))},
                {"create": {"collection": "transfers"}, "params": obj(json!({"data": obj(json!({"from": from, "to": to, "amount": amount}))}))},
                "ok"
            ]}
        }
    })
}

/// The calling thread's time on a CPU so far, in µs (`/proc/thread-self/schedstat`, in ns).
fn thread_cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    stat.split_whitespace().next().and_then(|ns| ns.parse::<f64>().ok()).unwrap_or(0.0) / 1e3
}

struct Rng(u64);

impl Rng {
    fn pair(&mut self, accounts: u64) -> (u64, u64) {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let from = (self.0 >> 33) % accounts + 1;
        let to = (from + (self.0 >> 13) % (accounts - 1)) % accounts + 1;
        (from, to)
    }
}

/// µs of the executor's thread per transfer over `batches` batches of `inputs` inputs of
/// `per_input` transfers each, after a warm-up of a tenth as many.
fn run(accounts: u64, batches: u64, inputs: u64, per_input: u64) -> f64 {
    let mut store = TransferStore::open(&format!("exec-cost-{per_input}"), accounts);
    let mut rng = Rng(12345);
    let batch = |rng: &mut Rng| -> Vec<Vec<u8>> {
        (0..inputs)
            .map(|i| {
                let q = if per_input == 1 {
                    let (from, to) = rng.pair(accounts);
                    transfer_body(account(from), account(to), json!(1))
                } else {
                    let rows: Vec<_> = (0..per_input)
                        .map(|_| {
                            let (from, to) = rng.pair(accounts);
                            json!([account(from), account(to), 1])
                        })
                        .collect();
                    let var = |n: &str| json!({ "var": n });
                    json!({"map": {"lambda": ["f", "t", "n"], "expr": transfer_body(var("f"), var("t"), var("n"))}, "collection": rows})
                };
                input(q, i as u8)
            })
            .collect()
    };
    for _ in 0..batches / 10 {
        let b = batch(&mut rng);
        store.apply(b);
    }
    // Decoded beforehand, as the receiving node's request threads do; they also free
    // the expressions, after the answers (`held`).
    let mut held = Vec::new();
    let all: Vec<_> = (0..batches)
        .map(|_| {
            let b = batch(&mut rng);
            let hints: Vec<_> = b
                .iter()
                .map(|bytes| {
                    let (hint, expr) = predecoded(bytes);
                    held.push(expr);
                    Some(hint)
                })
                .collect();
            (b, hints)
        })
        .collect();
    let t = thread_cpu_us();
    for (b, mut hints) in all {
        store.apply_decoded(b, &mut hints);
    }
    let spent = thread_cpu_us() - t;
    drop(held);
    store.close();
    spent / (batches * inputs * per_input) as f64
}

#[test]
#[ignore]
fn executor_cost_of_a_transfer() {
    // `EXEC_COST_ONLY=2` runs only the third case (to profile one of them).
    let only: Option<usize> = std::env::var("EXEC_COST_ONLY").ok().and_then(|v| v.parse().ok());
    let cases = [(10, 3000, 16, 1), (100_000, 3000, 16, 1), (10, 300, 4, 100), (100_000, 300, 4, 100)];
    for (i, &(accounts, batches, inputs, per_input)) in cases.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let us = run(accounts, batches, inputs, per_input);
        println!(
            "{accounts} accounts, {inputs} inputs a batch, {per_input} transfers an input: {us:.2} µs of the executor's thread per transfer"
        );
    }
}
