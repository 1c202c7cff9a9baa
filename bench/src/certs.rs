//! The benchmark's PKI: one development CA, a localhost server certificate shared by every
//! proxy under test, and the load generator's client certificate.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use portcullis_ca::dev::{DevCa, LeafSpec};

/// Writes `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key` and
/// `server-bundle.pem` (certificate then key, the form HAProxy loads) into `dir`.
pub(crate) fn write_bench_pki(dir: &Path, spiffe_id: &str) -> anyhow::Result<()> {
    const LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let ca = DevCa::new("portcullis bench CA").context("create the bench CA")?;
    ca.write(dir, "ca").context("write the CA")?;
    let server = ca
        .issue(&LeafSpec::localhost_server(&[], LIFETIME))
        .context("issue the server certificate")?;
    server
        .write(dir, "server")
        .context("write the server certificate")?;
    ca.issue(&LeafSpec::client("bench-client", Some(spiffe_id), LIFETIME))
        .context("issue the client certificate")?
        .write(dir, "client")
        .context("write the client certificate")?;
    let bundle = format!("{}{}", server.cert_pem, server.key_pem);
    let bundle_path = dir.join("server-bundle.pem");
    std::fs::write(&bundle_path, bundle)
        .with_context(|| format!("write {}", bundle_path.display()))?;
    Ok(())
}
