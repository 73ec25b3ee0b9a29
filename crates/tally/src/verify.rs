//! `tally verify`: check a ledger without trusting the server that kept it.
//!
//! `tally verify --data-dir DIR` recomputes, offline, every leaf, tree root, block header
//! and member signature from genesis (`tally_server::ledger_check`) and names the first
//! bad block height or leaf index. `tally verify --proof FILE --sth FILE` checks a saved
//! `/ledger/v1/` proof (`get-proof-by-hash` with the leaf's `leaf_input` or `hash` added,
//! `get-proof-by-revision`, or `get-sth-consistency` with `--old-sth`) against a saved
//! `get-sth` answer, with no server at all: every signature the head lists must verify,
//! and with member keys pinned (`--key`, `--members` = a saved `/cluster/status`) a
//! majority of them must have signed (a quorum certificate). Every refusal is one `bad: …`
//! line naming the check that failed, exit status 1.

use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;
use tally_ledger::merkle::{self, Hash};
use tally_ledger::sth::{self, TreeHead};

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Data directory to verify offline (the server must be stopped).
    #[arg(long, conflicts_with_all = ["proof", "sth"])]
    data_dir: Option<PathBuf>,
    /// With --data-dir: the directory `--log-retain archive:DIR` moved retired input log
    /// segments into, so the replay check runs from genesis.
    #[arg(long, requires = "data_dir")]
    log_archive: Option<PathBuf>,
    /// A saved proof (JSON answer of /ledger/v1/get-proof-by-hash, -by-revision or get-sth-consistency).
    #[arg(long, requires = "sth")]
    proof: Option<PathBuf>,
    /// The saved head to check the proof against (JSON answer of /ledger/v1/get-sth).
    #[arg(long)]
    sth: Option<PathBuf>,
    /// For a consistency proof: the older saved head.
    #[arg(long, requires = "proof")]
    old_sth: Option<PathBuf>,
    /// A member's public key (base64 or hex, repeatable): the head must then be signed by
    /// a majority of the keys given (a quorum certificate). Without keys, every signature
    /// the head lists must verify, but who signed is not checked.
    #[arg(long = "key")]
    keys: Vec<String>,
    /// A saved `/cluster/status` answer: its `member_keys` are added to the `--key`s.
    #[arg(long)]
    members: Option<PathBuf>,
}

pub fn main(args: VerifyArgs) -> anyhow::Result<()> {
    match (&args.data_dir, &args.proof, &args.sth) {
        (Some(dir), _, _) => verify_dir(dir, args.log_archive.as_deref()),
        (None, Some(proof), Some(head)) => {
            let verdict = pinned_keys(&args.keys, args.members.as_ref())
                .and_then(|keys| verify_proof(proof, head, args.old_sth.as_ref(), &keys));
            match verdict {
                Ok(what) => {
                    println!("ok: {what}");
                    Ok(())
                }
                Err(e) => {
                    println!("bad: {e:#}");
                    std::process::exit(1);
                }
            }
        }
        _ => bail!("give --data-dir DIR, or --proof FILE --sth FILE"),
    }
}

fn verify_dir(dir: &std::path::Path, archive: Option<&std::path::Path>) -> anyhow::Result<()> {
    match tally_server::ledger_check::verify_dir_with(dir, archive) {
        Ok(r) => {
            if let Some(first) = r.replay_skipped_from {
                println!(
                    "note: the input log starts at batch {first} (the batches before it were retired by --log-retain); \
                     the chain, leaves, signatures and state were checked, the replay of the log was not \
                     (give --log-archive DIR to replay archived segments)"
                );
            }
            if let Some((height, rules)) = r.replay_stopped_at {
                let by = if rules == 0 {
                    "a build from before batches carried executor rules".to_string()
                } else {
                    format!("executor rules {rules}")
                };
                println!(
                    "note: the replay stopped before batch {height}, sequenced under {by}; this build applies rules {} \
                     and cannot recompute that batch's block (the chain, leaves, signatures and state were checked; \
                     run `tally verify` of the build that sequenced it to replay the rest)",
                    tally_server::machine::RULES
                );
            }
            println!(
                "ok: {} blocks, {} leaves, {} member signatures by {} key(s), {} stored versions, {} batches replayed",
                r.blocks,
                r.leaves,
                r.signed_blocks,
                r.signing_keys.len(),
                r.versions_checked,
                r.replayed
            );
            Ok(())
        }
        Err(finding) => {
            println!("bad: {finding}");
            std::process::exit(1);
        }
    }
}

fn read_json(path: &PathBuf) -> anyhow::Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn bytes(v: &Value, field: &str) -> anyhow::Result<Vec<u8>> {
    let s = v[field].as_str().with_context(|| format!("`{field}` is missing or not a string"))?;
    B64.decode(s).with_context(|| format!("`{field}` is not base64"))
}

fn hash(v: &Value, field: &str) -> anyhow::Result<Hash> {
    let b = bytes(v, field)?;
    b.try_into().map_err(|b: Vec<u8>| anyhow::anyhow!("`{field}` must be 32 bytes, got {}", b.len()))
}

fn number(v: &Value, field: &str) -> anyhow::Result<u64> {
    v[field].as_u64().with_context(|| format!("`{field}` is missing or not a non-negative integer"))
}

fn hashes(v: &Value, field: &str) -> anyhow::Result<Vec<Hash>> {
    let items = v[field].as_array().with_context(|| format!("`{field}` is missing or not a list"))?;
    if items.len() > 128 {
        bail!("`{field}` has {} hashes; no proof in a tree of 2^64 leaves has more than 128", items.len());
    }
    items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let b =
                x.as_str().and_then(|s| B64.decode(s).ok()).with_context(|| format!("`{field}`[{i}] is not base64"))?;
            b.try_into().map_err(|_| anyhow::anyhow!("`{field}`[{i}] is not 32 bytes"))
        })
        .collect()
}

/// The member keys to require a majority of: `--key`s (base64 or hex) and a saved
/// `/cluster/status` answer's `member_keys`; none means no quorum is required.
fn pinned_keys(keys: &[String], members: Option<&PathBuf>) -> anyhow::Result<Vec<[u8; 32]>> {
    let mut texts: Vec<String> = keys.to_vec();
    if let Some(path) = members {
        let status = read_json(path)?;
        let listed = status["member_keys"].as_object().with_context(|| {
            format!("{} has no `member_keys`: save the answer of GET /cluster/status", path.display())
        })?;
        texts.extend(listed.values().filter_map(|v| v.as_str().map(String::from)));
    }
    let mut out: Vec<[u8; 32]> = Vec::new();
    for k in &texts {
        let raw = hex::decode(k).ok().filter(|b| b.len() == 32).or_else(|| B64.decode(k).ok());
        let key: [u8; 32] = raw
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("member key `{k}` is not 32 bytes in hex or base64"))?;
        if !out.contains(&key) {
            out.push(key);
        }
    }
    Ok(out)
}

/// The head in a saved get-sth answer, after checking its signatures: every listed
/// signature must verify over the head, and with pinned keys a majority of them must
/// have signed.
fn signed_head(sth_json: &Value, keys: &[[u8; 32]]) -> anyhow::Result<(TreeHead, String)> {
    let head = TreeHead {
        tree_size: number(sth_json, "tree_size")?,
        timestamp_ms: number(sth_json, "timestamp")?,
        root: hash(sth_json, "sha256_root_hash")?,
    };
    let sigs = sth_json["signatures"].as_array().context("the head lists no `signatures`")?;
    if sigs.len() > 1024 {
        bail!("the head lists {} signatures; no cluster has that many members", sigs.len());
    }
    let mut signers: Vec<Vec<u8>> = Vec::new();
    for (i, s) in sigs.iter().enumerate() {
        let pk = bytes(s, "public_key")?;
        let who = match s["member"].as_u64() {
            Some(m) => format!("signature {i} (member {m}, key {})", B64.encode(&pk)),
            None => format!("signature {i} (key {})", B64.encode(&pk)),
        };
        let sig = sth::parse_digitally_signed(&bytes(s, "tree_head_signature")?).with_context(|| who.clone())?;
        if !sth::verify(&pk, &head, &sig) {
            bail!(
                "{who} does not verify over the head (tree_size {}, timestamp {}, root {}): forged, or for another head",
                head.tree_size,
                head.timestamp_ms,
                B64.encode(head.root)
            );
        }
        if !signers.contains(&pk) {
            signers.push(pk);
        }
    }
    if signers.is_empty() {
        bail!("the head carries no signature");
    }
    if keys.is_empty() {
        return Ok((
            head,
            format!("{} signature(s) verified; no member keys pinned (--key, --members)", signers.len()),
        ));
    }
    let pinned = keys.iter().filter(|k| signers.iter().any(|s| s[..] == k[..])).count();
    if pinned * 2 <= keys.len() {
        bail!(
            "the head is signed by {pinned} of the {} pinned member keys; a quorum certificate needs a majority ({})",
            keys.len(),
            keys.len() / 2 + 1
        );
    }
    Ok((head, format!("signed by {pinned} of {} members (a majority)", keys.len())))
}

fn verify_proof(
    proof: &PathBuf,
    sth_path: &PathBuf,
    old: Option<&PathBuf>,
    keys: &[[u8; 32]],
) -> anyhow::Result<String> {
    let p = read_json(proof)?;
    let (head, signed) = signed_head(&read_json(sth_path)?, keys).context("the head (--sth)")?;
    let what = if let Some(old) = old {
        let (old_head, _) = signed_head(&read_json(old)?, keys).context("the older head (--old-sth)")?;
        for (field, want, name) in [("first", old_head.tree_size, "--old-sth"), ("second", head.tree_size, "--sth")] {
            if let Some(n) = p[field].as_u64().filter(|&n| n != want) {
                bail!("the consistency proof is from tree size {n} (`{field}`), but {name} has tree_size {want}");
            }
        }
        let proof = hashes(&p, "consistency")?;
        if !merkle::verify_consistency(old_head.tree_size, head.tree_size, &old_head.root, &head.root, &proof) {
            bail!(
                "the consistency proof does not show that tree {} is a prefix of tree {}",
                old_head.tree_size,
                head.tree_size
            );
        }
        format!("tree {} is a prefix of tree {}", old_head.tree_size, head.tree_size)
    } else {
        inclusion(&p, &head)?
    };
    Ok(format!("{what}; head {signed}"))
}

/// An inclusion proof (of a leaf, or of a document revision through its leaf).
fn inclusion(p: &Value, head: &TreeHead) -> anyhow::Result<String> {
    if let Some(size) = p["tree_size"].as_u64() {
        if size != head.tree_size {
            bail!("the proof is for a tree of {size} leaves, the head for {}", head.tree_size);
        }
    }
    let index = number(p, "leaf_index")?;
    let path = hashes(p, "audit_path")?;
    let (leaf_hash, what) = if p["leaf_input"].is_string() {
        let leaf = bytes(p, "leaf_input")?;
        (merkle::leaf_hash(&leaf), revision(p, &leaf)?)
    } else {
        (hash(p, "hash")?, format!("leaf {index}"))
    };
    if !merkle::verify_inclusion_of_hash(&leaf_hash, index, head.tree_size, &path, &head.root) {
        bail!("the audit path does not lead from leaf {index} to the head's root (tree of {} leaves)", head.tree_size);
    }
    Ok(format!("{what} is in the tree of {} leaves", head.tree_size))
}

/// For a get-proof-by-revision answer: the effect is in the leaf; else a plain leaf.
fn revision(p: &Value, leaf: &[u8]) -> anyhow::Result<String> {
    let Some(effect) = p.get("effect") else { return Ok("the leaf".into()) };
    let leaf = tally_ledger::leaf::TxnLeaf::decode(leaf)?;
    let fx = bytes(effect, "leaf")?;
    let path = hashes(effect, "audit_path")?;
    let index = number(effect, "index")?;
    let fx_hash = merkle::leaf_hash(&fx);
    if !merkle::verify_inclusion_of_hash(&fx_hash, index, leaf.effect_count.into(), &path, &leaf.effects_root) {
        bail!("the effect is not in the leaf's effects tree");
    }
    // A document version, written (space 0, op 0, with a value): not a removal's effect
    // leaf, which names the same key and ts but says the version was deleted.
    if fx.len() < 6 || fx[0] != tally_ledger::leaf::SPACE_DOCS || fx[1] != 0 {
        bail!("the effect is not a document version written (space {:?}, op {:?})", fx.first(), fx.get(1));
    }
    let rev = &p["revision"];
    // The effect must name the claimed version: its key and its ts.
    let key = bytes(rev, "key")?;
    let named = fx.len() >= 6 + key.len() + 8
        && fx[2..6] == (key.len() as u32).to_be_bytes()
        && fx[6..6 + key.len()] == key[..]
        && fx[6 + key.len()..14 + key.len()] == number(rev, "ts")?.to_be_bytes();
    if !named {
        bail!("the effect does not name the version the proof claims (key or ts differ)");
    }
    if fx.len() == 14 + key.len() {
        bail!("the effect carries no stored value: it is not a version written");
    }
    Ok(format!(
        "the version of {} at ts {} (transaction ts {})",
        rev["collection"].as_str().unwrap_or("?").to_owned() + "/" + rev["id"].as_str().unwrap_or("?"),
        rev["ts"],
        leaf.ts
    ))
}
