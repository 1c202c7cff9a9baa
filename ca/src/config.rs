//! The CA's configuration file (YAML), strictly parsed, then checked once into profiles and a
//! key backend.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "schema")]
use portcullis_identity::schema::HumanDuration;
use serde::{Deserialize, Serialize};

use crate::ids::TenantId;
use crate::key::{
    check_label, KeyAlgorithm, KeyBackend, PinSource, Pkcs11Backend, SoftwareBackend,
};
use crate::profile::{
    reaches_operator_path, DnsPattern, IssuanceProfile, KeyType, ProfileRole, SpiffeIdPattern,
    OPERATOR_PATH,
};
use crate::CaError;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The whole CA configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Directory for certificates, the CRL and the inventory.
    pub state_dir: PathBuf,
    /// Where the issuing key lives (`pkcs11: {…}` or `software: {…}`).
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    #[cfg_attr(feature = "schema", schemars(with = "BackendConfig"))]
    pub backend: BackendConfig,
    /// Where the root key lives, when not in `backend` (e.g. another token, kept offline).
    #[serde(default, with = "serde_yaml_ng::with::singleton_map")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<BackendConfig>"))]
    pub root_backend: Option<BackendConfig>,
    /// Key labels and algorithm.
    pub keys: KeysConfig,
    /// The root certificate (default: "Portcullis Root CA", 10 years).
    #[serde(default)]
    pub root: CertConfig,
    /// The issuing intermediate (default: "Portcullis Issuing CA", 1 year).
    #[serde(default)]
    pub intermediate: CertConfig,
    /// CRL publication.
    #[serde(default)]
    pub crl: CrlConfig,
    /// URLs written into every issued certificate's CRL distribution points extension, where
    /// relying parties other than Portcullis fetch the CRL (normally `http://…/crl.der`, served
    /// by the admin API's `revocation_http` listener). None by default.
    #[serde(default)]
    pub crl_distribution_points: Vec<String>,
    /// The OCSP responder's URL, written into every issued certificate's authority information
    /// access extension (e.g. `http://…/ocsp`). None by default.
    #[serde(default)]
    pub ocsp_url: Option<String>,
    /// No profile may grant a longer lifetime than this (default 24 h).
    #[serde(default = "default_cap", with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub max_lifetime_cap: Duration,
    /// Issuance profiles (at least one per tenant that may be issued certificates).
    #[serde(default)]
    pub profiles: Vec<ProfileConfig>,
}

fn default_cap() -> Duration {
    DAY
}

/// Longest URL accepted in a certificate extension.
const MAX_URL: usize = 512;

/// A URL for a certificate extension: `http://` or `https://`, printable ASCII without spaces
/// (an IA5String), a host present.
fn check_url(url: &str) -> Result<(), CaError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let ok = url.len() <= MAX_URL
        && url.bytes().all(|b| b.is_ascii_graphic())
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
    if ok {
        Ok(())
    } else {
        Err(CaError::Config(format!(
            "URL {:?}: expected http:// or https:// with a host, printable ASCII, at most {MAX_URL} bytes",
            url.chars().take(80).collect::<String>()
        )))
    }
}

/// A key backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BackendConfig {
    /// A PKCS#11 token.
    Pkcs11(Pkcs11Config),
    /// Software keys in a directory (warned about at load).
    Software(SoftwareConfig),
}

/// A PKCS#11 token. The PIN comes from `pin_file` or `pin_env`, exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The module (default SoftHSM2's).
    #[serde(default = "default_module")]
    pub module: PathBuf,
    pub token_label: String,
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    #[serde(default)]
    pub pin_env: Option<String>,
    /// Session pool size (0 or absent: the number of CPUs).
    #[serde(default)]
    pub sessions: usize,
}

fn default_module() -> PathBuf {
    PathBuf::from(crate::key::DEFAULT_PKCS11_MODULE)
}

impl Pkcs11Config {
    /// Where the PIN comes from.
    pub fn pin_source(&self) -> Result<PinSource, CaError> {
        PinSource::one_of(self.pin_file.as_deref(), self.pin_env.as_deref()).ok_or_else(|| {
            CaError::Config(format!(
                "pkcs11 token {:?}: set exactly one of pin_file and pin_env",
                self.token_label
            ))
        })
    }
}

/// A directory of software keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SoftwareConfig {
    pub key_dir: PathBuf,
}

impl BackendConfig {
    /// Opens the backend (loads the module and logs in, for PKCS#11).
    pub fn open(&self) -> Result<Arc<dyn KeyBackend>, CaError> {
        match self {
            BackendConfig::Pkcs11(p) => Ok(Arc::new(Pkcs11Backend::open(
                &p.module,
                &p.token_label,
                &p.pin_source()?,
                p.sessions,
            )?)),
            BackendConfig::Software(s) => Ok(Arc::new(SoftwareBackend::new(&s.key_dir))),
        }
    }

    /// Where the keys live, for progress lines: `PKCS#11 token "LABEL"` or `software keys in DIR`.
    pub fn describe(&self) -> String {
        match self {
            BackendConfig::Pkcs11(p) => format!("PKCS#11 token {:?}", p.token_label),
            BackendConfig::Software(s) => format!("software keys in {}", s.key_dir.display()),
        }
    }
}

/// Key labels in the backend(s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub root_label: String,
    pub issuing_label: String,
    /// The OCSP responder's signing key, in `backend` beside the issuing key (default
    /// `<issuing_label>-ocsp`; generated when first needed).
    #[serde(default)]
    pub ocsp_label: Option<String>,
    /// Algorithm of both keys (default p256).
    #[serde(default = "default_algorithm")]
    pub algorithm: KeyAlgorithm,
}

impl KeysConfig {
    /// The OCSP signing key's label.
    pub fn ocsp_label(&self) -> String {
        self.ocsp_label
            .clone()
            .unwrap_or_else(|| format!("{}-ocsp", self.issuing_label))
    }
}

fn default_algorithm() -> KeyAlgorithm {
    KeyAlgorithm::EcdsaP256Sha256
}

/// A CA certificate's name and validity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    #[serde(default)]
    pub common_name: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub validity: Option<Duration>,
}

/// CRL publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CrlConfig {
    /// How far ahead `nextUpdate` is (default 5 min): gateways refetch by then.
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub next_update: Duration,
}

impl Default for CrlConfig {
    fn default() -> Self {
        Self {
            next_update: Duration::from_secs(300),
        }
    }
}

/// An issuance profile as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    pub name: String,
    pub tenant: TenantId,
    /// `tenant` (default): workload identities, never under `/portcullis/operator/`.
    /// `operator`: operator identities, issued only at an operator's request or by renewal.
    #[serde(default)]
    pub role: ProfileRole,
    #[serde(default)]
    pub spiffe_ids: Vec<SpiffeIdPattern>,
    #[serde(default = "yes")]
    pub require_spiffe_id: bool,
    #[serde(default)]
    pub dns_names: Vec<DnsPattern>,
    #[serde(default)]
    pub allow_wildcard_names: bool,
    #[serde(default = "default_key_types")]
    pub key_types: Vec<KeyType>,
    /// Longest lifetime granted (default 1 h).
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub max_lifetime: Duration,
    /// Lifetime when none is requested (default: `max_lifetime`).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub default_lifetime: Option<Duration>,
    #[serde(default = "yes")]
    pub client_auth: bool,
    #[serde(default)]
    pub server_auth: bool,
    /// First issuances through the admin API wait for a person's approval
    /// (`approval: { required: true, expires_after: 1h }`; default off).
    #[serde(default)]
    pub approval: Option<ProfileApprovalConfig>,
}

/// Shortest wait a profile's `approval.expires_after` may set.
pub const MIN_APPROVAL_WAIT: Duration = Duration::from_secs(5);
/// Longest wait a profile's `approval.expires_after` may set.
pub const MAX_APPROVAL_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A profile's `approval:` as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProfileApprovalConfig {
    /// Whether first issuances wait for approval.
    #[serde(default)]
    pub required: bool,
    /// How long a request may wait before it expires unapproved (default 1 h; 5s to 7d).
    #[serde(default = "default_approval_wait", with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub expires_after: Duration,
}

fn default_approval_wait() -> Duration {
    HOUR
}

fn yes() -> bool {
    true
}

fn default_key_types() -> Vec<KeyType> {
    vec![KeyType::P256, KeyType::P384]
}

fn default_max_lifetime() -> Duration {
    HOUR
}

impl CaConfig {
    /// Reads and checks a YAML file.
    pub fn load(path: &Path) -> Result<Self, CaError> {
        let text = std::fs::read_to_string(path).map_err(|source| CaError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| CaError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and checks YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, CaError> {
        let config: CaConfig =
            serde_yaml_ng::from_str(text).map_err(|e| CaError::Config(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Checks what serde cannot: labels, lifetimes against the cap, unique profile names.
    pub fn check(&self) -> Result<(), CaError> {
        check_label(&self.keys.root_label)?;
        check_label(&self.keys.issuing_label)?;
        check_label(&self.keys.ocsp_label())?;
        if self.keys.ocsp_label() == self.keys.issuing_label
            || (self.root_backend.is_none() && self.keys.ocsp_label() == self.keys.root_label)
        {
            return Err(CaError::Config(
                "keys.ocsp_label must differ from the other keys' labels".to_owned(),
            ));
        }
        if self.root_backend.is_none() && self.keys.root_label == self.keys.issuing_label {
            return Err(CaError::Config(
                "keys.root_label and keys.issuing_label must differ in one backend".to_owned(),
            ));
        }
        for backend in std::iter::once(&self.backend).chain(self.root_backend.as_ref()) {
            if let BackendConfig::Pkcs11(p) = backend {
                p.pin_source()?;
            }
        }
        if self.crl.next_update < Duration::from_secs(60) {
            return Err(CaError::Config(
                "crl.next_update must be at least 1m".to_owned(),
            ));
        }
        for url in self.crl_distribution_points.iter().chain(&self.ocsp_url) {
            check_url(url)?;
        }
        self.profiles().map(|_| ())
    }

    /// The profiles, checked.
    pub fn profiles(&self) -> Result<Vec<IssuanceProfile>, CaError> {
        let mut names = HashSet::new();
        self.profiles
            .iter()
            .map(|p| {
                let bad = |why: String| CaError::Config(format!("profile {:?}: {why}", p.name));
                if p.name.is_empty() || !names.insert(p.name.as_str()) {
                    return Err(bad("name empty or used twice".to_owned()));
                }
                if p.max_lifetime.is_zero() || p.max_lifetime > self.max_lifetime_cap {
                    return Err(bad(format!(
                        "max_lifetime {} must be positive and at most max_lifetime_cap {}",
                        humantime::format_duration(p.max_lifetime),
                        humantime::format_duration(self.max_lifetime_cap)
                    )));
                }
                let default_lifetime = p.default_lifetime.unwrap_or(p.max_lifetime);
                if default_lifetime.is_zero() || default_lifetime > p.max_lifetime {
                    return Err(bad(
                        "default_lifetime must be positive and at most max_lifetime".to_owned(),
                    ));
                }
                if p.require_spiffe_id && p.spiffe_ids.is_empty() {
                    return Err(bad(
                        "require_spiffe_id is set but spiffe_ids is empty".to_owned()
                    ));
                }
                if p.spiffe_ids.is_empty() && p.dns_names.is_empty() {
                    return Err(bad(
                        "allows no name at all (spiffe_ids and dns_names empty)".to_owned(),
                    ));
                }
                // A pattern's syntax is shared with access rules (where `*.test` is fine); a
                // profile must not cover a whole top-level domain.
                if let Some(Err(e)) = p.dns_names.iter().find_map(|d| d.wildcard_name()) {
                    return Err(bad(format!("DNS pattern too broad to issue under: {e}")));
                }
                check_role(p).map_err(bad)?;
                if p.key_types.is_empty() {
                    return Err(bad("key_types is empty".to_owned()));
                }
                if !p.client_auth && !p.server_auth {
                    return Err(bad("grants neither client_auth nor server_auth".to_owned()));
                }
                let approval = match &p.approval {
                    Some(a) if a.required => {
                        if !(MIN_APPROVAL_WAIT..=MAX_APPROVAL_WAIT).contains(&a.expires_after) {
                            return Err(bad(format!(
                                "approval.expires_after {} must be between {} and {}",
                                humantime::format_duration(a.expires_after),
                                humantime::format_duration(MIN_APPROVAL_WAIT),
                                humantime::format_duration(MAX_APPROVAL_WAIT)
                            )));
                        }
                        // An operator's certificate is issued at an operator's request or by
                        // renewal, never by the admin API's first issuance: nothing would wait.
                        if p.role == ProfileRole::Operator {
                            return Err(bad(
                                "approval applies to tenant profiles, not role: operator"
                                    .to_owned(),
                            ));
                        }
                        Some(crate::profile::ApprovalRule {
                            expires_after: a.expires_after,
                        })
                    }
                    _ => None,
                };
                Ok(IssuanceProfile {
                    name: p.name.clone(),
                    tenant: p.tenant.clone(),
                    role: p.role,
                    spiffe_ids: p.spiffe_ids.clone(),
                    require_spiffe_id: p.require_spiffe_id,
                    dns_names: p.dns_names.clone(),
                    allow_wildcard_names: p.allow_wildcard_names,
                    key_types: p.key_types.clone(),
                    max_lifetime: p.max_lifetime,
                    default_lifetime,
                    client_auth: p.client_auth,
                    server_auth: p.server_auth,
                    approval,
                })
            })
            .collect()
    }
}

/// Operators are a role: a tenant profile may not carry a pattern that could issue an ID
/// under the operator path; an operator profile issues SPIFFE IDs only.
fn check_role(p: &ProfileConfig) -> Result<(), String> {
    match p.role {
        ProfileRole::Tenant => match p.spiffe_ids.iter().find(|s| reaches_operator_path(s)) {
            Some(pattern) => Err(format!(
                "SPIFFE ID pattern {pattern} could issue IDs under \
                 spiffe://{}{OPERATOR_PATH}, which are reserved for operators: narrow it \
                 (e.g. spiffe://{}/ns/**), and issue operators from a profile with role: operator",
                pattern.trust_domain(),
                pattern.trust_domain()
            )),
            None => Ok(()),
        },
        ProfileRole::Operator => {
            if !p.require_spiffe_id || !p.dns_names.is_empty() {
                return Err(
                    "role: operator issues SPIFFE IDs only (require_spiffe_id true, no dns_names)"
                        .to_owned(),
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
state_dir: /var/lib/portcullis/ca
backend:
  pkcs11:
    token_label: portcullis-ca
    pin_env: PORTCULLIS_HSM_PIN
keys:
  root_label: root
  issuing_label: issuing
profiles:
  - name: acme-workloads
    tenant: acme
    spiffe_ids: ["spiffe://acme.example/ns/*/sa/*"]
    dns_names: ["*.acme.internal"]
    max_lifetime: 2h
"#;

    #[test]
    fn parses_with_defaults() {
        let c = CaConfig::from_yaml(GOOD).unwrap();
        assert_eq!(c.crl.next_update, Duration::from_secs(300));
        let p = &c.profiles().unwrap()[0];
        assert_eq!(p.default_lifetime, Duration::from_secs(7200));
        assert!(p.client_auth && !p.server_auth);
        assert_eq!(p.key_types, vec![KeyType::P256, KeyType::P384]);
    }

    #[test]
    fn approval_is_off_by_default_and_its_wait_is_bounded() {
        let c = CaConfig::from_yaml(GOOD).unwrap();
        assert_eq!(c.profiles().unwrap()[0].approval, None);
        let with = |approval: &str| {
            CaConfig::from_yaml(&GOOD.replace(
                "    max_lifetime: 2h\n",
                &format!("    max_lifetime: 2h\n    approval: {approval}\n"),
            ))
        };
        let c = with("{ required: true }").unwrap();
        assert_eq!(
            c.profiles().unwrap()[0].approval,
            Some(crate::profile::ApprovalRule {
                expires_after: HOUR
            })
        );
        assert_eq!(
            with("{ required: false, expires_after: 1s }")
                .unwrap()
                .profiles()
                .unwrap()[0]
                .approval,
            None
        );
        for bad in ["1s", "8d"] {
            let err = with(&format!("{{ required: true, expires_after: {bad} }}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("approval.expires_after"), "{err}");
        }
        assert!(
            with("{ required: true, expire_after: 1h }").is_err(),
            "typo"
        );
    }

    #[test]
    fn refuses_typos_wildcard_abuse_and_over_cap() {
        for (bad, needle) in [
            (
                GOOD.replace("max_lifetime: 2h", "max_lifetim: 2h"),
                "unknown field",
            ),
            (GOOD.replace("*.acme.internal", "*.com"), "wildcard"),
            (GOOD.replace("*.acme.internal", "*"), "wildcard"),
            (
                GOOD.replace("max_lifetime: 2h", "max_lifetime: 48h"),
                "max_lifetime_cap",
            ),
            (
                GOOD.replace("pin_env: PORTCULLIS_HSM_PIN", "pin: \"1234\""),
                "unknown field",
            ),
            (GOOD.replace("ns/*/sa/*", "ns/**/sa"), "last segment"),
            (GOOD.replace("tenant: acme", "tenant: Acme"), "tenant id"),
            (
                GOOD.replace("profiles:", "ocsp_url: ftp://ca.example/ocsp\nprofiles:"),
                "http:// or https://",
            ),
            (
                GOOD.replace(
                    "profiles:",
                    "crl_distribution_points: [\"http://\"]\nprofiles:",
                ),
                "http:// or https://",
            ),
            (
                GOOD.replace(
                    "profiles:",
                    "ocsp_url: \"http://ca.example/o csp\"\nprofiles:",
                ),
                "printable ASCII",
            ),
        ] {
            let err = CaConfig::from_yaml(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn operators_are_a_role_and_their_path_is_reserved() {
        let err = CaConfig::from_yaml(&GOOD.replace("ns/*/sa/*", "**"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("acme-workloads")
                && err.contains("spiffe://acme.example/**")
                && err.contains("spiffe://acme.example/portcullis/operator/"),
            "{err}"
        );
        let operators = format!(
            "{GOOD}  - name: ops\n    tenant: acme\n    role: operator\n    spiffe_ids: [\"spiffe://acme.example/portcullis/operator/*\"]\n"
        );
        let c = CaConfig::from_yaml(&operators).unwrap();
        assert_eq!(c.profiles().unwrap()[1].role, ProfileRole::Operator);
        // The same pattern in a tenant profile is refused.
        let err = CaConfig::from_yaml(&operators.replace("    role: operator\n", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"ops\"") && err.contains("reserved"), "{err}");
        let err = CaConfig::from_yaml(&operators.replace(
            "    role: operator\n",
            "    role: operator\n    dns_names: [ops.acme.internal]\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("SPIFFE IDs only"), "{err}");
        let err = CaConfig::from_yaml(&operators.replace("role: operator", "role: admin"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant"), "{err}");
    }
}
