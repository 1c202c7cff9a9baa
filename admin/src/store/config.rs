//! The `store:` section of the admin config, strictly parsed and checked once. Every refusal
//! names the field and why; the password is only ever read from `password_file`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use postgres::config::{Host, SslMode};
use serde::{Deserialize, Serialize};

/// Connections in the pool unless `max_connections` says otherwise.
const DEFAULT_MAX_CONNECTIONS: u32 = 8;
/// Most connections one admin server may hold.
const MAX_CONNECTIONS: u32 = 1000;

/// `store:`: where the admin plane's state lives. Empty: SQLite files in the CA state
/// directory, as for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The inventory and bootstrap tokens in this PostgreSQL database.
    #[serde(default)]
    pub postgres: Option<PostgresStoreConfig>,
}

/// `store.postgres`: the database, said as `url` or as `host`/`port`/`user`/`dbname`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PostgresStoreConfig {
    /// `postgresql://user@host:port/dbname` (or a `key=value` connection string), without a
    /// password.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// Default 5432.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub dbname: Option<String>,
    /// A file holding the password (one line); none when the server authenticates by
    /// client certificate or trusts the user.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Never accepted: here only to be refused by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub password: Option<InlineSecret>,
    /// TLS to the server (required unless `insecure_plaintext`).
    #[serde(default)]
    pub tls: Option<PostgresTlsConfig>,
    /// Connect in clear: only to a PostgreSQL on loopback or a Unix socket.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// Connections this admin server may hold (default 8).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// `store.postgres.tls`: the CA the server's certificate must chain to (its name is checked
/// against the host), and a client certificate when the server asks for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PostgresTlsConfig {
    pub ca: PathBuf,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// A value written where a secret must not be: parsed only to refuse it, never kept or shown.
#[derive(Clone, PartialEq, Eq)]
pub struct InlineSecret;

impl std::fmt::Debug for InlineSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineSecret(..)")
    }
}

impl<'de> Deserialize<'de> for InlineSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(InlineSecret)
    }
}

impl Serialize for InlineSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}

impl StoreConfig {
    pub(crate) fn resolve(&mut self, base: &Path) {
        if let Some(pg) = &mut self.postgres {
            pg.resolve(base);
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        match &self.postgres {
            Some(pg) => pg.connection().map(|_| ()),
            None => Ok(()),
        }
    }
}

impl PostgresStoreConfig {
    fn resolve(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = &mut self.password_file {
            resolve(p);
        }
        if let Some(tls) = &mut self.tls {
            resolve(&mut tls.ca);
            tls.client_cert.iter_mut().for_each(resolve);
            tls.client_key.iter_mut().for_each(resolve);
        }
    }

    /// The checked connection settings (no password yet: that is read at connection time)
    /// with the TLS mode set: `require` with TLS (verified in full by the configured CA),
    /// `disable` in clear.
    pub(crate) fn connection(&self) -> Result<postgres::Config, String> {
        if self.password.is_some() {
            return Err(
                "store.postgres.password: a password is never written in the config; \
                        put it in a file readable only by the admin server and name that file \
                        with password_file"
                    .to_owned(),
            );
        }
        let fields = self.host.is_some()
            || self.port.is_some()
            || self.user.is_some()
            || self.dbname.is_some();
        let mut config = match (&self.url, fields) {
            (Some(_), true) => {
                return Err(
                    "store.postgres: url and host/port/user/dbname both given; say \
                            where the database is one way"
                        .to_owned(),
                )
            }
            (None, false) => {
                return Err(
                    "store.postgres: no database named: give url, or host, user and \
                            dbname"
                        .to_owned(),
                )
            }
            (Some(url), false) => {
                let config = postgres::Config::from_str(url).map_err(|e| {
                    format!(
                        "store.postgres.url: not a PostgreSQL URL or connection string ({})",
                        portcullis_audit::with_causes(&e)
                    )
                })?;
                if config.get_password().is_some() {
                    return Err(
                        "store.postgres.url: carries a password; a password is never \
                                written in the config: put it in a file and name that file \
                                with password_file"
                            .to_owned(),
                    );
                }
                config
            }
            (None, true) => {
                let required = |value: &Option<String>, name: &str| {
                    value.clone().filter(|v| !v.is_empty()).ok_or_else(|| {
                        format!("store.postgres.{name}: required (or give url instead)")
                    })
                };
                let mut config = postgres::Config::new();
                config
                    .host(&required(&self.host, "host")?)
                    .port(self.port.unwrap_or(5432))
                    .user(&required(&self.user, "user")?)
                    .dbname(&required(&self.dbname, "dbname")?);
                config
            }
        };
        if config.get_hosts().is_empty() {
            return Err("store.postgres.url: names no host".to_owned());
        }
        if config.get_user().is_none() {
            return Err("store.postgres.url: names no user".to_owned());
        }
        match (&self.tls, self.insecure_plaintext) {
            (Some(_), true) => {
                return Err(
                    "store.postgres: tls and insecure_plaintext: true contradict each \
                            other; keep one"
                        .to_owned(),
                )
            }
            (None, false) => {
                return Err(
                    "store.postgres.tls: required (ca, and client_cert with client_key \
                            when the server asks for a certificate); only a PostgreSQL on \
                            loopback may be reached in clear, with insecure_plaintext: true"
                        .to_owned(),
                )
            }
            (Some(tls), false) => {
                if tls.client_cert.is_some() != tls.client_key.is_some() {
                    return Err(
                        "store.postgres.tls: client_cert and client_key go together".to_owned()
                    );
                }
                if config.get_ssl_mode() == SslMode::Disable {
                    return Err(
                        "store.postgres.url: says sslmode=disable but tls is configured; \
                                drop sslmode (TLS is always required and verified)"
                            .to_owned(),
                    );
                }
                config.ssl_mode(SslMode::Require);
            }
            (None, true) => {
                if let Some(host) = config.get_hosts().iter().find(|h| !is_loopback(h)) {
                    return Err(format!(
                        "store.postgres.insecure_plaintext: only for a PostgreSQL on loopback \
                         or a Unix socket, and {} is neither (the password and the token \
                         hashes would cross the network in clear); configure tls",
                        shown(host)
                    ));
                }
                if config.get_ssl_mode() == SslMode::Require {
                    return Err("store.postgres.url: asks for sslmode=require but \
                                insecure_plaintext is set; configure tls instead"
                        .to_owned());
                }
                config.ssl_mode(SslMode::Disable);
            }
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(format!(
                "store.postgres.max_connections: {} is outside 1..={MAX_CONNECTIONS}",
                self.max_connections
            ));
        }
        Ok(config)
    }
}

fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

fn shown(host: &Host) -> String {
    match host {
        Host::Tcp(name) => format!("host {name:?}"),
        Host::Unix(path) => format!("socket {}", path.display()),
    }
}
