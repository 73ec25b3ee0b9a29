//! `tally cluster init-certs`: a cluster CA and certificates for a quick start.
//!
//! Writes into `--out`:
//! - `ca.pem`, `ca.key`: the cluster CA (kept, and reused by a later run in the same
//!   directory, so certificates for members added later chain to the same CA);
//! - `member-N.pem`, `member-N.key` for each `--members` id: the member's certificate,
//!   for both ends of mutual TLS (DNS name `member-N.tally.invalid`, see
//!   `tally_raft::tls`) and, since it also names `--hosts`, for its client port;
//! - `server.pem`, `server.key`: a certificate for `--hosts` only (a single node's
//!   client port, `tally serve --tls-cert server.pem --tls-key server.key`).
//!
//! Keys are ECDSA P-256, written readable by the owner only.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Args, Debug)]
pub struct InitCertsArgs {
    /// Member ids to issue certificates for, e.g. 1,2,3 (none: only the CA and server.pem).
    #[arg(long, value_delimiter = ',')]
    pub members: Vec<u64>,
    /// Directory to write the files into (created if missing).
    #[arg(long, default_value = "./tally-certs")]
    pub out: PathBuf,
    /// Host names and IP addresses clients reach the servers by.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub hosts: Vec<String>,
    /// Days the issued certificates are valid.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
    /// Test-only: issue certificates that expired yesterday.
    #[arg(long, hide = true)]
    pub expired: bool,
}

pub fn init_certs(a: &InitCertsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.days > 0, "--days must be at least 1");
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let issuer = ca(&a.out)?;
    let now = time::OffsetDateTime::now_utc();
    let (from, until) = if a.expired {
        (now - time::Duration::days(30), now - time::Duration::days(1))
    } else {
        (now - time::Duration::hours(1), now + time::Duration::days(a.days.into()))
    };
    for id in &a.members {
        anyhow::ensure!(*id > 0, "member ids start at 1");
        let mut names = vec![tally_server::peer_tls::member_name(*id)];
        names.extend(a.hosts.iter().cloned());
        let stem = format!("member-{id}");
        issue(&issuer, names, &format!("Tally member {id}"), (from, until), &a.out, &stem)?;
    }
    if !a.hosts.is_empty() {
        issue(&issuer, a.hosts.clone(), "Tally server", (from, until), &a.out, "server")?;
    }
    println!("certificates in {}: ca.pem (trust it in clients), ca.key (keep it private)", a.out.display());
    for id in &a.members {
        println!("  member {id}: --peer-cert member-{id}.pem --peer-key member-{id}.key --peer-ca ca.pem");
    }
    if !a.hosts.is_empty() {
        println!("  client port: --tls-cert server.pem --tls-key server.key ({})", a.hosts.join(", "));
    }
    Ok(())
}

/// The CA's name carries a tag of its key: clients that trust several Tally CAs (say,
/// before and after a rotation) find a certificate's issuer by name, so names must differ.
fn ca_params(key: &KeyPair) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    // An uncompressed EC point: 0x04, then X, whose bytes are as good as random.
    let tag: String = key.public_key_raw().iter().skip(1).take(6).map(|b| format!("{b:02x}")).collect();
    p.distinguished_name.push(DnType::CommonName, format!("Tally cluster CA {tag}"));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(3650);
    Ok(p)
}

/// The CA in `dir`, made on the first run. A reused CA is rebuilt from its key and its
/// name (derived from the key): all a signature and a certificate's issuer field depend on.
fn ca(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if key_path.exists() {
        let pem = std::fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let key =
            KeyPair::from_pem(&pem).with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
        println!("using the existing CA in {}", dir.display());
        return Ok(Issuer::new(ca_params(&key)?, key));
    }
    let key = KeyPair::generate()?;
    let params = ca_params(&key)?;
    let cert = params.self_signed(&key)?;
    write(&cert_path, &cert.pem(), false)?;
    write(&key_path, &key.serialize_pem(), true)?;
    Ok(Issuer::new(params, key))
}

fn issue(
    issuer: &Issuer<'static, KeyPair>,
    names: Vec<String>,
    common_name: &str,
    (from, until): (time::OffsetDateTime, time::OffsetDateTime),
    dir: &Path,
    stem: &str,
) -> anyhow::Result<()> {
    let mut p = CertificateParams::new(names)?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = from;
    p.not_after = until;
    // Lets clients that trust several CAs pick this one by key, not only by name.
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, issuer)?;
    write(&dir.join(format!("{stem}.pem")), &cert.pem(), false)?;
    write(&dir.join(format!("{stem}.key")), &key.serialize_pem(), true)
}

fn write(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Written beside and renamed, so a server watching the file never reads half of it.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
