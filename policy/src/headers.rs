//! Request headers the gateway owns or never believes from a caller: removed from every
//! request before it is forwarded (the gateway then sets its own identity and forwarding
//! headers), and never allowed as access-rule conditions, since a rule on them would read
//! whatever the caller chose to send.

/// Prefix of the identity headers the gateway sends upstream.
pub const GATEWAY_PREFIX: &str = "x-portcullis-";

/// Always removed: identity, origin, routing and method overrides a caller could forge, and
/// client-certificate headers upstreams may trust from a TLS terminator (RFC 9440 and the
/// common `X-SSL-Client-*` / `X-Client-Cert` forms). A trailing `*` matches a prefix.
pub const ALWAYS_STRIPPED: &[&str] = &[
    "x-portcullis-*",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-client-cert",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "client-cert",
    "client-cert-chain",
    "x-client-cert*",
    "x-ssl-client-*",
    "x-ssl-cert",
];

/// Which request headers are removed before forwarding: [`ALWAYS_STRIPPED`] plus the
/// config's `http.strip_headers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripList {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl Default for StripList {
    fn default() -> Self {
        Self::with_extra(&[])
    }
}

impl StripList {
    /// The built-in list plus `extra` (lowercase names, `*` suffix for a prefix).
    pub(crate) fn with_extra(extra: &[String]) -> Self {
        let mut list = Self {
            exact: Vec::new(),
            prefixes: Vec::new(),
        };
        for entry in ALWAYS_STRIPPED
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
        {
            match entry.strip_suffix('*') {
                Some(prefix) => list.prefixes.push(prefix.to_ascii_lowercase()),
                None => list.exact.push(entry.to_ascii_lowercase()),
            }
        }
        list
    }

    /// Whether a header called `name` (lowercase, as `http` stores names) is removed.
    pub fn strips(&self, name: &str) -> bool {
        self.exact.iter().any(|e| e == name) || self.prefixes.iter().any(|p| name.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_list_and_configured_extras_are_stripped() {
        let list = StripList::with_extra(&["x-internal-*".to_owned(), "X-User".to_owned()]);
        for name in [
            "x-portcullis-spiffe-id",
            "x-forwarded-host",
            "x-original-url",
            "x-http-method-override",
            "client-cert-chain",
            "x-ssl-client-s-dn",
            "x-client-cert-chain",
            "x-internal-token",
            "x-user",
        ] {
            assert!(list.strips(name), "{name}");
        }
        for name in ["accept", "x-env", "x-forwarded", "cookie"] {
            assert!(!list.strips(name), "{name}");
        }
    }
}
