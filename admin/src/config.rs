//! The admin server's configuration (YAML), strictly parsed, paths resolved against the file's
//! folder, then checked once.
//!
//! ```yaml
//! listen: 127.0.0.1:8443
//! ca: ca.yaml                     # the CA's own config file
//! tls:
//!   self_issue:                   # or: certificate: admin.pem + private_key: admin.key
//!     tenant: platform
//!     profile: admin-server
//!     dns_names: [admin.portcullis.internal, localhost]
//!     spiffe_id: spiffe://portcullis.internal/admin   # when the profile requires one
//! operators:                      # issued by a CA profile with `role: operator`
//!   - spiffe://portcullis.internal/portcullis/operator/alice
//! crl_poll_interval: 2s           # default 2s
//! ```
//!
//! Operators are a role: [`AdminConfig::check_operators`] refuses an operator ID that a tenant
//! profile of the CA could issue, or that no operator profile issues.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_ca::{IssuanceProfile, ProfileRole, TenantId, OPERATOR_PATH};
use portcullis_identity::SpiffeId;
use serde::{Deserialize, Serialize};

use crate::error::{io_error, AdminError};

/// The admin server's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the HTTPS listener.
    pub listen: SocketAddr,
    /// The CA's configuration file (relative paths: against this file's folder).
    pub ca: PathBuf,
    /// The server's own certificate.
    pub tls: ServingTlsConfig,
    /// SPIFFE IDs allowed to revoke and list certificates of any tenant, when their certificate
    /// was issued under a CA profile with `role: operator`.
    #[serde(default)]
    pub operators: Vec<String>,
    /// How often `STATE/crl.pem` is checked for a change (default 2 s).
    #[serde(default = "default_crl_poll", with = "humantime_serde")]
    pub crl_poll_interval: Duration,
}

fn default_crl_poll() -> Duration {
    Duration::from_secs(2)
}

/// The server certificate, as written: either `self_issue`, or `certificate` and `private_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingTlsConfig {
    /// Issue the server certificate from the CA at start, and renew it.
    #[serde(default)]
    pub self_issue: Option<SelfIssueConfig>,
    /// PEM certificate chain (leaf first).
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
}

/// What the self-issued server certificate asks the CA for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfIssueConfig {
    /// The tenant whose profile issues it.
    pub tenant: TenantId,
    /// The CA profile (must grant `server_auth`); its default lifetime is used.
    pub profile: String,
    /// DNS names the certificate carries (at least one).
    pub dns_names: Vec<String>,
    /// A SPIFFE ID, for profiles that require one.
    #[serde(default)]
    pub spiffe_id: Option<String>,
}

/// Where the server certificate comes from, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServingCertSource {
    /// Issued by the CA at start and renewed at 2/3 of its lifetime.
    SelfIssue(SelfIssueConfig),
    /// Read from files once at start.
    Files {
        certificate: PathBuf,
        private_key: PathBuf,
    },
}

impl AdminConfig {
    /// Reads a YAML file, resolves relative paths against its folder, and checks it.
    pub fn load(path: &Path) -> Result<Self, AdminError> {
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, base).map_err(|detail| AdminError::Config {
            path: path.display().to_string(),
            detail,
        })
    }

    /// Parses YAML text, resolving relative paths against `base`, and checks it.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Self, String> {
        let mut config: AdminConfig = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut config.ca);
        resolve_opt(&mut config.tls.certificate, base);
        resolve_opt(&mut config.tls.private_key, base);
        config.serving_cert()?;
        for op in &config.operators {
            op.parse::<SpiffeId>()
                .map_err(|e| format!("operators: {op:?} is not a SPIFFE ID: {e}"))?;
        }
        if config.crl_poll_interval < Duration::from_millis(100) {
            return Err("crl_poll_interval must be at least 100ms".to_owned());
        }
        Ok(config)
    }

    /// Checks the operators against the CA's profiles. Operators are a role: an operator's ID
    /// must be one no tenant profile could issue (or that tenant could act as the operator:
    /// list and revoke every certificate), and one that a profile with `role: operator`
    /// issues (else no certificate could act as it). The error names the operator, the
    /// profile and the pattern.
    pub fn check_operators(&self, profiles: &[IssuanceProfile]) -> Result<(), String> {
        for op in &self.operators {
            let id: SpiffeId = op
                .parse()
                .map_err(|e| format!("operators: {op:?} is not a SPIFFE ID: {e}"))?;
            let issued_by = |role: ProfileRole| {
                profiles
                    .iter()
                    .filter(move |p| p.role == role)
                    .find_map(|p| {
                        let pattern = p.spiffe_ids.iter().find(|pattern| pattern.matches(&id))?;
                        Some((p, pattern))
                    })
            };
            if let Some((profile, pattern)) = issued_by(ProfileRole::Tenant) {
                return Err(format!(
                    "operators: {op} could be issued by tenant {}'s profile {:?} (SPIFFE ID \
                     pattern {pattern}), so that tenant could act as this operator; give \
                     operators IDs under spiffe://{}{OPERATOR_PATH}, issued by a profile with \
                     role: operator",
                    profile.tenant,
                    profile.name,
                    id.trust_domain()
                ));
            }
            if issued_by(ProfileRole::Operator).is_none() {
                return Err(format!(
                    "operators: no CA profile with role: operator issues {op}, so no \
                     certificate could act as this operator"
                ));
            }
        }
        Ok(())
    }

    /// Where the server certificate comes from.
    pub fn serving_cert(&self) -> Result<ServingCertSource, String> {
        let tls = &self.tls;
        match (&tls.self_issue, &tls.certificate, &tls.private_key) {
            (Some(s), None, None) => {
                if s.dns_names.is_empty() {
                    return Err("tls.self_issue.dns_names: name at least one".to_owned());
                }
                Ok(ServingCertSource::SelfIssue(s.clone()))
            }
            (None, Some(c), Some(k)) => Ok(ServingCertSource::Files {
                certificate: c.clone(),
                private_key: k.clone(),
            }),
            _ => Err("tls: give either self_issue, or both certificate and private_key".to_owned()),
        }
    }
}

fn resolve_opt(p: &mut Option<PathBuf>, base: &Path) {
    if let Some(p) = p {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen: 127.0.0.1:8443
ca: ca.yaml
tls:
  self_issue:
    tenant: platform
    profile: admin-server
    dns_names: [localhost]
operators: ["spiffe://example.org/portcullis/operator/alice"]
"#;

    #[test]
    fn parses_and_resolves_paths() {
        let c = AdminConfig::from_yaml(GOOD, Path::new("/etc/portcullis")).unwrap();
        assert_eq!(c.ca, PathBuf::from("/etc/portcullis/ca.yaml"));
        assert_eq!(c.crl_poll_interval, Duration::from_secs(2));
        assert!(matches!(
            c.serving_cert().unwrap(),
            ServingCertSource::SelfIssue(_)
        ));
        let files = GOOD.replace(
            "  self_issue:\n    tenant: platform\n    profile: admin-server\n    dns_names: [localhost]\n",
            "  certificate: a.pem\n  private_key: /k/a.key\n",
        );
        let c = AdminConfig::from_yaml(&files, Path::new("/etc/p")).unwrap();
        assert_eq!(
            c.serving_cert().unwrap(),
            ServingCertSource::Files {
                certificate: "/etc/p/a.pem".into(),
                private_key: "/k/a.key".into()
            }
        );
    }

    #[test]
    fn refuses_typos_and_ambiguity() {
        for (bad, needle) in [
            (GOOD.replace("operators", "operator"), "unknown field"),
            (
                GOOD.replace("dns_names: [localhost]", "dns_names: []"),
                "at least one",
            ),
            (
                GOOD.replace(
                    "    dns_names: [localhost]\n",
                    "    dns_names: [localhost]\n  certificate: x.pem\n",
                ),
                "either",
            ),
            (
                GOOD.replace("spiffe://example.org/portcullis/operator/alice", "alice"),
                "SPIFFE",
            ),
            (
                GOOD.replace(
                    "/portcullis/operator/alice",
                    "/portcullis/operator/../alice",
                ),
                "SPIFFE",
            ),
            (
                GOOD.replace("tenant: platform", "tenant: Platform"),
                "tenant id",
            ),
        ] {
            let err = AdminConfig::from_yaml(&bad, Path::new("/")).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn an_operator_a_tenant_profile_could_issue_is_refused() {
        let profiles = |yaml: &str| {
            portcullis_ca::CaConfig::from_yaml(&format!(
                "state_dir: /s\nbackend:\n  software:\n    key_dir: /k\nkeys:\n  \
                 root_label: r\n  issuing_label: i\nprofiles:\n{yaml}"
            ))
            .unwrap()
            .profiles()
            .unwrap()
        };
        let operators = "  - name: ops\n    tenant: platform\n    role: operator\n    \
                         spiffe_ids: [\"spiffe://example.org/portcullis/operator/*\"]\n";
        let c = AdminConfig::from_yaml(GOOD, Path::new("/")).unwrap();
        c.check_operators(&profiles(operators)).unwrap();

        let legacy = GOOD.replace("/portcullis/operator/alice", "/operator/alice");
        let legacy = AdminConfig::from_yaml(&legacy, Path::new("/")).unwrap();
        let tenant = "  - name: team-a\n    tenant: a\n    spiffe_ids: [\"spiffe://example.org/operator/*\"]\n";
        let err = legacy
            .check_operators(&profiles(&format!("{operators}{tenant}")))
            .unwrap_err();
        for needle in [
            "spiffe://example.org/operator/alice",
            "\"team-a\"",
            "spiffe://example.org/operator/*",
            "tenant a",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        // No operator profile issues it: no certificate could ever act as it.
        let err = c.check_operators(&profiles(tenant)).unwrap_err();
        assert!(err.contains("role: operator"), "{err}");
    }
}
