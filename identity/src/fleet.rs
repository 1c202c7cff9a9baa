//! The `fleet:` section both planes share, checked: which etcd cluster holds the fleet's state
//! (the revocation set), under which key prefix, and how to reach it. Pure data and checks;
//! the client is `portcullis-fleet`.

use std::path::PathBuf;

/// Default key prefix: every key of the fleet lives under it.
pub const DEFAULT_FLEET_PREFIX: &str = "/portcullis";

/// Where the fleet's etcd cluster is and how to talk to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSettings {
    /// The cluster's client URLs (`http://host:port` or `https://host:port`), tried in turn.
    pub endpoints: Vec<String>,
    /// Key prefix (starts with `/`, no trailing `/`).
    pub prefix: String,
    /// TLS to etcd (required for `https://` endpoints): its CA, and optionally a client
    /// certificate and key for mutual TLS.
    pub tls: Option<FleetTls>,
}

/// TLS to etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetTls {
    /// The CA bundle etcd's serving certificate chains to.
    pub ca: PathBuf,
    /// A client certificate (PEM chain) and its key, when etcd asks for one.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Checks one endpoint: `http://` or `https://`, a host, a port, nothing after.
pub fn check_fleet_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| {
            format!(
                "endpoint `{}` must start with http:// or https://",
                crate::shown(endpoint)
            )
        })?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let bad = || {
        format!(
            "endpoint `{}` must be scheme://host:port with nothing after",
            crate::shown(endpoint)
        )
    };
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(()),
        _ => Err(bad()),
    }
}

/// Checks a key prefix: starts with `/`, no trailing `/`, printable ASCII without spaces.
pub fn check_fleet_prefix(prefix: &str) -> Result<(), String> {
    let ok = prefix.starts_with('/')
        && prefix.len() > 1
        && !prefix.ends_with('/')
        && prefix.len() <= 128
        && prefix.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "prefix `{}` must start with `/`, not end with `/`, and be at most 128 printable characters",
            crate::shown(prefix)
        ))
    }
}

impl FleetSettings {
    /// Checks the parts together: at least one endpoint, each well-formed; `https://`
    /// endpoints need `tls`, and `tls` needs `https://` endpoints (no mixing).
    pub fn check(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("endpoints: at least one etcd client URL is needed".to_owned());
        }
        for e in &self.endpoints {
            check_fleet_endpoint(e)?;
        }
        check_fleet_prefix(&self.prefix)?;
        let https = self.endpoints.iter().filter(|e| e.starts_with("https://"));
        let all_https = https.count() == self.endpoints.len();
        let none_https = self.endpoints.iter().all(|e| e.starts_with("http://"));
        match (&self.tls, all_https, none_https) {
            (Some(_), true, _) | (None, _, true) => Ok(()),
            (None, _, _) => Err("https:// endpoints need a `tls` section (ca)".to_owned()),
            (Some(_), _, _) => Err(
                "`tls` is set but not every endpoint is https://; use one scheme for all"
                    .to_owned(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoints: &[&str], tls: bool) -> FleetSettings {
        FleetSettings {
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            prefix: DEFAULT_FLEET_PREFIX.to_owned(),
            tls: tls.then(|| FleetTls {
                ca: "ca.pem".into(),
                client: None,
            }),
        }
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(check_fleet_endpoint("http://127.0.0.1:2379").is_ok());
        assert!(check_fleet_endpoint("https://etcd-1.example:2379/").is_ok());
        assert!(check_fleet_endpoint("etcd:2379").is_err());
        assert!(check_fleet_endpoint("http://etcd").is_err());
        assert!(check_fleet_endpoint("http://etcd:0").is_err());
        assert!(check_fleet_endpoint("http://etcd:2379/v3").is_err());
        assert!(check_fleet_endpoint("http://:2379").is_err());
    }

    #[test]
    fn schemes_and_tls_agree() {
        assert!(settings(&["http://127.0.0.1:2379"], false).check().is_ok());
        assert!(settings(&["https://127.0.0.1:2379"], true).check().is_ok());
        assert!(settings(&["https://127.0.0.1:2379"], false)
            .check()
            .is_err());
        assert!(settings(&["http://127.0.0.1:2379"], true).check().is_err());
        assert!(settings(&[], false).check().is_err());
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_fleet_prefix("/portcullis").is_ok());
        assert!(check_fleet_prefix("/a/b").is_ok());
        assert!(check_fleet_prefix("portcullis").is_err());
        assert!(check_fleet_prefix("/").is_err());
        assert!(check_fleet_prefix("/a/").is_err());
        assert!(check_fleet_prefix("/a b").is_err());
    }
}
