//! The agent's configuration (YAML), strictly parsed, paths resolved against the file's folder,
//! then checked once into typed values.
//!
//! ```yaml
//! socket: /run/portcullis/workload.sock    # the Workload API (its folder is created 0755)
//! admin:                                    # the CA's issuance API
//!   url: https://admin.portcullis.internal:8443
//!   ca: /etc/portcullis/bundle.pem         # trusted for the admin API, handed to workloads
//! node:                                     # the agent's own certificate
//!   spiffe_id: spiffe://example.org/agent/node-1
//!   certificate: /var/lib/portcullis-agent/node.pem
//!   private_key: /var/lib/portcullis-agent/node.key
//!   bootstrap_token_file: /etc/portcullis/node.token   # first certificate only
//!   profile: agents                         # optional; lifetime: optional too
//! svid_lifetime: 1h                         # optional (default: the profile's)
//! workloads:
//!   - selectors: { uid: 1000, path: /usr/bin/python3.11 }   # all given must match
//!     spiffe_id: spiffe://example.org/ns/web/sa/api
//!     tenant: acme                          # optional (default: the agent's own tenant)
//!     dns_names: [api.web.internal]         # optional
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_identity::{DnsName, SpiffeId, TenantId};
use serde::Deserialize;

use crate::AgentError;

/// The agent's configuration, checked.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Path of the Workload API's Unix socket.
    pub socket: PathBuf,
    pub admin: AdminEndpoint,
    pub node: NodeIdentity,
    /// Lifetime asked for each SVID (`None`: the profile's default).
    pub svid_lifetime: Option<Duration>,
    pub workloads: Vec<WorkloadEntry>,
}

/// Where the admin API is, and what its certificate chains to.
#[derive(Debug, Clone)]
pub struct AdminEndpoint {
    pub url: String,
    pub host: String,
    pub port: u16,
    /// PEM trust bundle: verifies the admin API, and is the bundle workloads receive.
    pub ca: PathBuf,
}

/// The agent's own certificate: obtained with a bootstrap token, renewed by mTLS.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub spiffe_id: SpiffeId,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub bootstrap_token_file: Option<PathBuf>,
    pub profile: Option<String>,
    pub lifetime: Option<Duration>,
}

/// One registration: callers matching `selectors` get an SVID for `spiffe_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEntry {
    pub selectors: Selectors,
    pub spiffe_id: SpiffeId,
    /// The tenant the SVID is asked for (`None`: the agent's own).
    pub tenant: Option<TenantId>,
    pub dns_names: Vec<DnsName>,
    /// The CA profile to ask for (`None`: the tenant's default).
    pub profile: Option<String>,
}

/// What a caller must be. Every given selector must match; at least one is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selectors {
    /// The caller's user id (from the socket's peer credentials).
    pub uid: Option<u32>,
    /// The caller's group id.
    pub gid: Option<u32>,
    /// The caller's executable, as `/proc/PID/exe` names it (absolute, symlinks resolved).
    pub path: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    socket: PathBuf,
    admin: RawAdmin,
    node: RawNode,
    #[serde(default, with = "humantime_serde")]
    svid_lifetime: Option<Duration>,
    workloads: Vec<RawWorkload>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    url: String,
    ca: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    spiffe_id: String,
    certificate: PathBuf,
    private_key: PathBuf,
    #[serde(default)]
    bootstrap_token_file: Option<PathBuf>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default, with = "humantime_serde")]
    lifetime: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    selectors: Selectors,
    spiffe_id: String,
    #[serde(default)]
    tenant: Option<TenantId>,
    #[serde(default)]
    dns_names: Vec<String>,
    #[serde(default)]
    profile: Option<String>,
}

impl AgentConfig {
    /// Reads a YAML file, resolves relative paths against its folder, and checks it.
    pub fn load(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, base).map_err(|detail| AgentError::Config {
            path: path.display().to_string(),
            detail,
        })
    }

    /// Parses YAML text, resolving relative paths against `base`, and checks it.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Self, String> {
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let (host, port) = https_authority(&raw.admin.url)
            .ok_or_else(|| format!("admin.url: `{}` is not https://host:port", raw.admin.url))?;
        let node_id: SpiffeId = raw
            .node
            .spiffe_id
            .parse()
            .map_err(|e| format!("node.spiffe_id: {e}"))?;
        if raw.workloads.is_empty() {
            return Err("workloads: register at least one workload".to_owned());
        }
        let mut workloads = Vec::with_capacity(raw.workloads.len());
        for (i, w) in raw.workloads.into_iter().enumerate() {
            let at = format!("workloads[{i}]");
            let s = &w.selectors;
            if s.uid.is_none() && s.gid.is_none() && s.path.is_none() {
                return Err(format!(
                    "{at}.selectors: give at least one of uid, gid, path (an entry without \
                     selectors would hand its SVID to every local process)"
                ));
            }
            if s.path.as_ref().is_some_and(|p| p.is_relative()) {
                return Err(format!(
                    "{at}.selectors.path: must be absolute (it is compared with /proc/PID/exe)"
                ));
            }
            let spiffe_id: SpiffeId = w
                .spiffe_id
                .parse()
                .map_err(|e| format!("{at}.spiffe_id: {e}"))?;
            if spiffe_id == node_id {
                return Err(format!(
                    "{at}.spiffe_id: {spiffe_id} is the agent's own identity"
                ));
            }
            let dns_names = w
                .dns_names
                .iter()
                .map(|d| {
                    d.parse::<DnsName>()
                        .map_err(|e| format!("{at}.dns_names: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            workloads.push(WorkloadEntry {
                selectors: w.selectors,
                spiffe_id,
                tenant: w.tenant,
                dns_names,
                profile: w.profile,
            });
        }
        if raw
            .svid_lifetime
            .is_some_and(|l| l < Duration::from_secs(2))
        {
            return Err("svid_lifetime: at least 2s".to_owned());
        }
        Ok(Self {
            socket: resolve(raw.socket),
            admin: AdminEndpoint {
                url: raw.admin.url,
                host,
                port,
                ca: resolve(raw.admin.ca),
            },
            node: NodeIdentity {
                spiffe_id: node_id,
                certificate: resolve(raw.node.certificate),
                private_key: resolve(raw.node.private_key),
                bootstrap_token_file: raw.node.bootstrap_token_file.map(resolve),
                profile: raw.node.profile,
                lifetime: raw.node.lifetime,
            },
            svid_lifetime: raw.svid_lifetime,
            workloads,
        })
    }
}

/// `(host, port)` of an `https://host:port[/]` URL.
fn https_authority(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
socket: run/workload.sock
admin:
  url: https://localhost:8443
  ca: bundle.pem
node:
  spiffe_id: spiffe://example.org/agent/node-1
  certificate: node.pem
  private_key: /keys/node.key
  bootstrap_token_file: node.token
svid_lifetime: 1m
workloads:
  - selectors: { uid: 1000, path: /usr/bin/python3 }
    spiffe_id: spiffe://example.org/ns/web/sa/api
    tenant: acme
    dns_names: [api.web.internal]
  - selectors: { gid: 50 }
    spiffe_id: spiffe://example.org/ns/db/sa/main
"#;

    #[test]
    fn parses_and_resolves_paths() {
        let c = AgentConfig::from_yaml(GOOD, Path::new("/etc/agent")).unwrap();
        assert_eq!(c.socket, PathBuf::from("/etc/agent/run/workload.sock"));
        assert_eq!((c.admin.host.as_str(), c.admin.port), ("localhost", 8443));
        assert_eq!(c.node.private_key, PathBuf::from("/keys/node.key"));
        assert_eq!(c.svid_lifetime, Some(Duration::from_secs(60)));
        assert_eq!(c.workloads.len(), 2);
        assert_eq!(c.workloads[0].selectors.uid, Some(1000));
        assert_eq!(
            c.workloads[0].tenant.as_ref().map(|t| t.as_str()),
            Some("acme")
        );
        assert_eq!(c.workloads[1].tenant, None);
    }

    #[test]
    fn refuses_typos_and_unsafe_entries() {
        for (from, to, needle) in [
            ("svid_lifetime", "svid_lifetme", "unknown field"),
            ("{ gid: 50 }", "{ gid: 50, user: 3 }", "unknown field"),
            ("{ gid: 50 }", "{}", "at least one of uid, gid, path"),
            ("/usr/bin/python3", "python3", "must be absolute"),
            (
                "https://localhost:8443",
                "http://localhost:8443",
                "https://host:port",
            ),
            (
                "spiffe://example.org/ns/db/sa/main",
                "spiffe://example.org/agent/node-1",
                "own identity",
            ),
            (
                "spiffe://example.org/ns/db/sa/main",
                "example.org/db",
                "workloads[1].spiffe_id",
            ),
            ("tenant: acme", "tenant: Acme", "tenant"),
            ("[api.web.internal]", "[\"bad name\"]", "dns_names"),
            ("svid_lifetime: 1m", "svid_lifetime: 1s", "at least 2s"),
        ] {
            let bad = GOOD.replace(from, to);
            assert_ne!(bad, GOOD, "{from}");
            let err = AgentConfig::from_yaml(&bad, Path::new("/")).unwrap_err();
            assert!(err.contains(needle), "{to}: {needle}: {err}");
        }
        let none = GOOD.split("workloads:").next().unwrap().to_owned() + "workloads: []\n";
        assert!(AgentConfig::from_yaml(&none, Path::new("/"))
            .unwrap_err()
            .contains("at least one workload"));
    }
}
