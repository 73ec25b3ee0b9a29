//! Reading Fauna's snapshot export into a database (`tally import --fauna DIR`).
//!
//! The layout read (docs/export.md): `DIR/metadata_*.json` (optional `doc_format`:
//! `simple` or `tagged`), and `DIR/data/collections/<Coll>/<Coll>_<part>_<n>.json`,
//! `.jsonl`, each possibly `.gz`: one document per line (or a JSON array), with `id`,
//! `coll`, `ts`, optional `ttl`, and the user's fields at the top level. The user's fields
//! become the v4 document's `data`; `id` and `ts` are kept (`Insert` at `ts`), so refs
//! held elsewhere still point at the same documents. Tagged values (`@int`, `@long`,
//! `@double`, `@time`, `@date`, `@bytes`, `@mod`, `@ref`, `@doc`, `@object`) become the
//! v4 values they denote; in the simple format values are taken as they are.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use crate::transfer::{quote, Importer, Item};

/// Lines longer than this are refused (a Fauna document is at most 8 MiB).
const LINE_BYTES_MAX: usize = 16 << 20;
/// Tagged values nest at most this deep.
const DEPTH_MAX: usize = 128;

fn coll_ref(name: &str) -> Value {
    json!({ "@ref": { "id": name, "collection": { "@ref": { "id": "collections" } } } })
}

/// The name in `coll`: `"Coll"` (simple) or `{"@mod": "Coll"}` (tagged).
fn coll_name(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("@mod").and_then(Value::as_str))
}

/// A tagged value as the v4 wire value it denotes.
fn untag(v: &Value, depth: usize) -> anyhow::Result<Value> {
    if depth > DEPTH_MAX {
        bail!("a value nests more than {DEPTH_MAX} levels deep");
    }
    let Value::Object(m) = v else {
        return match v {
            Value::Array(a) => Ok(Value::Array(a.iter().map(|x| untag(x, depth + 1)).collect::<Result<_, _>>()?)),
            other => Ok(other.clone()),
        };
    };
    if m.len() == 1 {
        let (k, x) = m.iter().next().context("one key")?;
        let text = || x.as_str().with_context(|| format!("{k} holds {x}, not a string"));
        match k.as_str() {
            "@int" | "@long" => return Ok(json!(text()?.parse::<i64>().with_context(|| format!("{k} {x}"))?)),
            "@double" => return Ok(json!(text()?.parse::<f64>().with_context(|| format!("{k} {x}"))?)),
            "@time" => return Ok(json!({ "@ts": text()? })),
            "@date" => return Ok(json!({ "@date": text()? })),
            "@bytes" => return Ok(json!({ "@bytes": text()? })),
            "@mod" => return Ok(coll_ref(text()?)),
            "@ref" | "@doc" => {
                let id = x["id"].as_str().context("a @ref without an id")?;
                let coll = coll_name(&x["coll"]).context("a @ref without a coll")?;
                return Ok(json!({ "@ref": { "id": id, "collection": coll_ref(coll) } }));
            }
            "@object" => return object(x, depth),
            "@set" | "@stream" => return Ok(Value::Null),
            _ => {}
        }
    }
    object(v, depth)
}

/// An object's fields untagged; escaped (`@obj`) when a key starts with `@`.
fn object(v: &Value, depth: usize) -> anyhow::Result<Value> {
    let m = v.as_object().context("an @object that is no object")?;
    let mut out = Map::new();
    for (k, x) in m {
        out.insert(k.clone(), untag(x, depth + 1)?);
    }
    if out.keys().any(|k| k.starts_with('@')) {
        return Ok(json!({ "@obj": out }));
    }
    Ok(Value::Object(out))
}

/// One exported document as its `Insert`.
fn insert_call(doc: &Value, dir_coll: &str) -> anyhow::Result<(String, Value)> {
    let m = doc.as_object().context("a document that is not a JSON object")?;
    let id = match &m.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => bail!("a document without an id"),
    };
    let coll = m.get("coll").and_then(coll_name).unwrap_or(dir_coll).to_string();
    let mut data = Map::new();
    for (k, v) in m {
        if !["id", "coll", "ts", "ttl"].contains(&k.as_str()) {
            data.insert(k.clone(), untag(v, 0)?);
        }
    }
    let mut params = json!({ "data": Value::Object(data) });
    if let Some(ttl) = m.get("ttl").filter(|t| !t.is_null()) {
        params["ttl"] = time_of(ttl)?;
    }
    let r = json!({ "ref": { "collection": coll }, "id": id });
    let call = match m.get("ts").filter(|t| !t.is_null()) {
        Some(ts) => json!({ "insert": r, "ts": time_of(ts)?, "action": "create", "params": quote(&params) }),
        None => json!({ "create": r, "params": quote(&params) }),
    };
    Ok((coll, call))
}

/// `ts`/`ttl`: a tagged `@time`, an ISO string (simple format) or microseconds.
fn time_of(v: &Value) -> anyhow::Result<Value> {
    match v {
        Value::String(s) => Ok(json!({ "@ts": s })),
        Value::Number(_) => Ok(v.clone()),
        Value::Object(m) if m.contains_key("@time") => untag(v, 0),
        other => bail!("a timestamp {other} is neither a time nor a number"),
    }
}

/// The data files of each collection, in name order.
fn data_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let root = dir.join("data").join("collections");
    let mut out = Vec::new();
    let mut colls: Vec<_> = std::fs::read_dir(&root)
        .with_context(|| format!("{} has no data/collections directory", dir.display()))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    colls.sort_by_key(|e| e.file_name());
    for c in colls {
        let name = c.file_name().to_string_lossy().to_string();
        let mut files: Vec<PathBuf> = std::fs::read_dir(c.path())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.to_string_lossy();
                [".json", ".jsonl", ".json.gz", ".jsonl.gz"].iter().any(|s| n.ends_with(s))
            })
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (name.clone(), f)));
    }
    Ok(out)
}

/// The documents of one file: JSON lines, or one JSON array.
fn documents(path: &Path) -> anyhow::Result<Box<dyn Iterator<Item = anyhow::Result<Value>>>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let raw: Box<dyn Read> = if path.to_string_lossy().ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut reader = std::io::BufReader::new(raw);
    let first = reader.fill_buf()?.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'[') {
        let all: Vec<Value> =
            serde_json::from_reader(reader).with_context(|| format!("{} is not a JSON array", path.display()))?;
        return Ok(Box::new(all.into_iter().map(Ok)));
    }
    let shown = path.display().to_string();
    Ok(Box::new(reader.lines().enumerate().filter_map(move |(n, line)| {
        let line = match line {
            Ok(l) if l.trim().is_empty() => return None,
            Ok(l) if l.len() > LINE_BYTES_MAX => {
                return Some(Err(anyhow::anyhow!("{shown}:{}: line over {LINE_BYTES_MAX} bytes", n + 1)))
            }
            Ok(l) => l,
            Err(e) => return Some(Err(e.into())),
        };
        Some(serde_json::from_str(&line).with_context(|| format!("{shown}:{} is not JSON", n + 1)))
    })))
}

/// The export's metadata (the first `metadata_*.json`), if there is one.
fn metadata(dir: &Path) -> anyhow::Result<Option<Value>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("metadata") && n.to_string_lossy().ends_with(".json"))
        })
        .collect();
    found.sort();
    let Some(p) = found.first() else { return Ok(None) };
    let text = std::fs::read_to_string(p)?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?))
}

pub async fn import(imp: &mut Importer, dir: &Path, base: &str) -> anyhow::Result<()> {
    let meta = metadata(dir)?;
    if let Some(m) = &meta {
        println!("Fauna export {}", m.get("export_id").or(m.get("id")).unwrap_or(&Value::Null));
    }
    let files = data_files(dir)?;
    imp.bar.set_length(files.iter().map(|(_, f)| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum());
    let mut made = std::collections::BTreeSet::new();
    let mut n = 0u64;
    for (coll, file) in files {
        if made.insert(coll.clone()) {
            let q = json!({ "if": { "exists": { "collection": coll } }, "then": null, "else": { "create_collection": { "object": { "name": coll } } } });
            imp.push(
                n,
                Item::Schema { path: base.to_string(), query: q, kind: "collection".into(), name: coll.clone() },
            )
            .await?;
            n += 1;
        }
        for doc in documents(&file)? {
            let (_, call) = insert_call(&doc?, &coll).with_context(|| format!("in {}", file.display()))?;
            imp.push(n, Item::Doc { path: base.to_string(), calls: vec![call] }).await?;
            n += 1;
        }
        imp.bar.inc(std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0));
    }
    imp.flush().await?;
    imp.done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_values_become_v4_values() {
        let doc = json!({
            "id": "101", "coll": {"@mod": "Users"}, "ts": {"@time": "2023-01-02T03:04:05.000006Z"},
            "n": {"@int": "5"}, "big": {"@long": "9007199254740993"}, "x": {"@double": "1.5"},
            "born": {"@date": "1990-01-01"}, "friend": {"@ref": {"id": "7", "coll": {"@mod": "Users"}}},
            "odd": {"@object": {"@k": 1}}, "nested": {"a": [{"@int": "1"}]}
        });
        let (coll, call) = insert_call(&doc, "Users").unwrap();
        assert_eq!(coll, "Users");
        assert_eq!(call["ts"], json!({"@ts": "2023-01-02T03:04:05.000006Z"}));
        let data = &call["params"]["object"]["data"]["object"];
        assert_eq!(data["n"], json!(5));
        assert_eq!(data["big"], json!(9007199254740993i64));
        assert_eq!(data["x"], json!(1.5));
        assert_eq!(data["born"], json!({"@date": "1990-01-01"}));
        assert_eq!(data["friend"]["@ref"]["id"], "7");
        assert_eq!(data["odd"], json!({"object": {"@k": 1}}));
        assert_eq!(data["nested"], json!({"object": {"a": [1]}}));
    }

    #[test]
    fn simple_documents_keep_their_values() {
        let doc = json!({"id": "5", "coll": "Orders", "ts": "2023-01-02T03:04:05Z", "ttl": "2099-01-01T00:00:00Z", "total": 3});
        let (coll, call) = insert_call(&doc, "x").unwrap();
        assert_eq!(coll, "Orders");
        assert_eq!(call["params"]["object"]["ttl"], json!({"@ts": "2099-01-01T00:00:00Z"}));
        assert_eq!(call["params"]["object"]["data"]["object"]["total"], json!(3));
        assert!(insert_call(&json!({"coll": "Orders"}), "x").is_err());
        assert!(untag(&json!({"@int": "x"}), 0).is_err());
    }
}
