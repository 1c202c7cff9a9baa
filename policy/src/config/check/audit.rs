//! The `audit` section: where the log lives, how durable it must be, and where it is shipped.

use std::time::Duration;

use super::Checker;
use crate::config::raw::{
    RawAudit, RawAuditPostgres, RawPkcs11Key, RawPostgresTls, RawRefusalRecords,
};
use crate::config::{
    AuditKey, AuditMode, AuditPostgres, AuditSettings, PostgresTls, RefusalRecords, SecretSource,
};

const DEFAULT_DURABLE_TIMEOUT: Duration = Duration::from_millis(250);
const MAX_DURABLE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CHECKPOINT_EVERY: u64 = 10_000;
const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
const MIN_SEGMENT_BYTES: u64 = 4096;
const MIN_RETENTION: Duration = Duration::from_secs(3600);
/// 10 GiB: room for months of a busy gateway's records, and a bound well short of filling a
/// disk by surprise.
const DEFAULT_MAX_BYTES: u64 = 10 << 30;
const MIN_MAX_BYTES: u64 = 64 << 10;
const DEFAULT_REFUSAL_PATH_BYTES: usize = 1024;
const REFUSAL_PATH_BYTES: std::ops::RangeInclusive<usize> = 64..=65536;
const DEFAULT_REFUSALS_PER_SOURCE: u32 = 100;
const DEFAULT_REFUSAL_INTERVAL: Duration = Duration::from_secs(60);
const REFUSAL_INTERVAL: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

impl Checker<'_> {
    pub(super) fn audit(&mut self, raw: &RawAudit) -> AuditSettings {
        let what = "audit";
        let directory = self.file_path("audit.directory", what, &raw.directory);
        let signing_key = match (&raw.signing_key, &raw.signing_pkcs11) {
            (Some(path), None) => AuditKey::File(self.file_path("audit.signing_key", what, path)),
            (None, Some(pkcs11)) => self.pkcs11_key("audit.signing_pkcs11", pkcs11),
            _ => {
                self.at_key(
                    "audit",
                    "audit: give exactly one of `signing_key` (a key file) and `signing_pkcs11`"
                        .to_owned(),
                );
                AuditKey::File(self.base.join("audit.key"))
            }
        };
        if let Some(node) = &raw.node {
            let valid = !node.is_empty()
                && node.len() <= 128
                && node
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                self.at_value(
                    "audit.node",
                    format!("audit: node `{node}` must be 1-128 letters, digits, '-', '_' or '.'"),
                );
            }
        }
        let mode = match raw.mode.as_deref() {
            None | Some("fail-closed") => AuditMode::FailClosed,
            Some("best-effort") => AuditMode::BestEffort,
            Some(other) => {
                self.at_value(
                    "audit.mode",
                    format!("audit: mode `{other}` is not `fail-closed` or `best-effort`"),
                );
                AuditMode::FailClosed
            }
        };
        let durable_timeout = self.nonzero(
            "audit.durable_timeout",
            "audit: durable_timeout",
            raw.durable_timeout,
            DEFAULT_DURABLE_TIMEOUT,
        );
        if durable_timeout > MAX_DURABLE_TIMEOUT {
            self.at_value(
                "audit.durable_timeout",
                "audit: durable_timeout may be at most 10s".to_owned(),
            );
        }
        let checkpoint_every = raw.checkpoint_every.unwrap_or(DEFAULT_CHECKPOINT_EVERY);
        if checkpoint_every == 0 {
            self.at_value(
                "audit.checkpoint_every",
                "audit: checkpoint_every must be at least 1".to_owned(),
            );
        }
        let checkpoint_interval = self.nonzero(
            "audit.checkpoint_interval",
            "audit: checkpoint_interval",
            raw.checkpoint_interval,
            DEFAULT_CHECKPOINT_INTERVAL,
        );
        let segment_bytes = raw.segment_bytes.unwrap_or(DEFAULT_SEGMENT_BYTES);
        if segment_bytes < MIN_SEGMENT_BYTES {
            self.at_value(
                "audit.segment_bytes",
                format!("audit: segment_bytes must be at least {MIN_SEGMENT_BYTES}"),
            );
        }
        if raw.retention.is_some_and(|r| r < MIN_RETENTION) {
            self.at_value(
                "audit.retention",
                "audit: retention must be at least 1h".to_owned(),
            );
        }
        let max_bytes = raw.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if max_bytes < MIN_MAX_BYTES.max(segment_bytes.saturating_mul(2)) {
            self.at_value(
                "audit.max_bytes",
                format!(
                    "audit: max_bytes must be at least {MIN_MAX_BYTES} and at least twice \
                     segment_bytes (retention frees room by whole segments)"
                ),
            );
        }
        let refusals = self.audit_refusals(raw.refusals.as_ref().unwrap_or(&Default::default()));
        let postgres = raw.postgres.as_ref().and_then(|pg| self.audit_postgres(pg));
        AuditSettings {
            directory,
            node: raw.node.clone(),
            mode,
            durable_timeout,
            signing_key,
            checkpoint_every,
            checkpoint_interval,
            segment_bytes,
            retention: raw.retention,
            include_query: raw.include_query,
            max_bytes,
            refusals,
            postgres,
            head_file: raw
                .head_file
                .as_ref()
                .map(|f| self.file_path("audit.head_file", what, f)),
            public_key: raw
                .public_key
                .as_ref()
                .map(|f| self.file_path("audit.public_key", what, f)),
        }
    }

    fn audit_refusals(&mut self, raw: &RawRefusalRecords) -> RefusalRecords {
        let path_bytes = raw.path_bytes.unwrap_or(DEFAULT_REFUSAL_PATH_BYTES);
        if !REFUSAL_PATH_BYTES.contains(&path_bytes) {
            self.at_value(
                "audit.refusals.path_bytes",
                "audit.refusals: path_bytes must be between 64 and 65536".to_owned(),
            );
        }
        let per_source = raw.per_source.unwrap_or(DEFAULT_REFUSALS_PER_SOURCE);
        if per_source == 0 {
            self.at_value(
                "audit.refusals.per_source",
                "audit.refusals: per_source must be at least 1".to_owned(),
            );
        }
        let interval = raw.interval.unwrap_or(DEFAULT_REFUSAL_INTERVAL);
        if !REFUSAL_INTERVAL.contains(&interval) {
            self.at_value(
                "audit.refusals.interval",
                "audit.refusals: interval must be between 1s and 1h".to_owned(),
            );
        }
        RefusalRecords {
            path_bytes,
            per_source,
            interval,
        }
    }

    /// A key in a PKCS#11 token, at config path `path`.
    pub(super) fn pkcs11_key(&mut self, path: &str, raw: &RawPkcs11Key) -> AuditKey {
        let pin = match (&raw.pin_file, &raw.pin_env) {
            (Some(file), None) => {
                SecretSource::File(self.file_path(&format!("{path}.pin_file"), path, file))
            }
            (None, Some(var)) => SecretSource::Env(var.clone()),
            _ => {
                self.at_key(
                    path,
                    format!("{path}: give exactly one of `pin_file` and `pin_env`"),
                );
                SecretSource::Env(String::new())
            }
        };
        for (key, value) in [
            ("token_label", &raw.token_label),
            ("key_label", &raw.key_label),
        ] {
            if value.is_empty() {
                self.at_value(&format!("{path}.{key}"), format!("{path}: {key} is empty"));
            }
        }
        AuditKey::Pkcs11 {
            module: raw
                .module
                .as_ref()
                .map(|m| self.file_path(&format!("{path}.module"), path, m)),
            token_label: raw.token_label.clone(),
            pin,
            key_label: raw.key_label.clone(),
        }
    }

    fn audit_postgres(&mut self, raw: &RawAuditPostgres) -> Option<AuditPostgres> {
        let path = "audit.postgres";
        let tls = match (&raw.tls, raw.insecure_plaintext) {
            (Some(tls), false) => self.postgres_tls(tls),
            (None, true) => PostgresTls::InsecurePlaintext,
            (Some(_), true) => {
                self.at_key(
                    "audit.postgres.insecure_plaintext",
                    "audit.postgres: `tls` and `insecure_plaintext` exclude each other".to_owned(),
                );
                return None;
            }
            (None, false) => {
                self.at_key(
                    path,
                    "audit.postgres: give `tls.ca` (the CA that signed the PostgreSQL server's \
                     certificate; the server is verified in full), or `insecure_plaintext: true` \
                     to ship the log and the password in clear"
                        .to_owned(),
                );
                return None;
            }
        };
        if let Some(text) = &raw.conninfo {
            let lower = text.to_ascii_lowercase().replace(' ', "");
            let conflict = match tls {
                PostgresTls::InsecurePlaintext => lower.contains("sslmode=require").then_some(
                    "asks for TLS (sslmode=require) but no CA is configured: give `tls.ca`",
                ),
                PostgresTls::VerifyFull { .. } => lower.contains("sslmode=disable").then_some(
                    "says sslmode=disable but `tls` is configured; say `insecure_plaintext: true` \
                     to ship in clear",
                ),
            };
            if let Some(problem) = conflict {
                self.at_value(
                    "audit.postgres.conninfo",
                    format!("audit.postgres: `conninfo` {problem}"),
                );
                return None;
            }
        }
        let conninfo = self.postgres_conninfo(raw)?;
        Some(AuditPostgres { conninfo, tls })
    }

    fn postgres_tls(&mut self, raw: &RawPostgresTls) -> PostgresTls {
        let path = "audit.postgres.tls";
        let ca = self.file_path(&format!("{path}.ca"), path, &raw.ca);
        let client = match (&raw.client_certificate, &raw.client_key) {
            (Some(cert), Some(key)) => Some((
                self.file_path(&format!("{path}.client_certificate"), path, cert),
                self.file_path(&format!("{path}.client_key"), path, key),
            )),
            (None, None) => None,
            _ => {
                self.at_key(
                    path,
                    "audit.postgres.tls: give both `client_certificate` and `client_key`, or neither"
                        .to_owned(),
                );
                None
            }
        };
        PostgresTls::VerifyFull { ca, client }
    }

    fn postgres_conninfo(&mut self, raw: &RawAuditPostgres) -> Option<SecretSource> {
        let path = "audit.postgres";
        let given = [
            raw.conninfo.is_some(),
            raw.conninfo_env.is_some(),
            raw.conninfo_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            self.at_key(
                path,
                "audit.postgres: give exactly one of `conninfo`, `conninfo_env`, `conninfo_file`"
                    .to_owned(),
            );
            return None;
        }
        if let Some(text) = &raw.conninfo {
            if carries_password(text) {
                self.at_value(
                    "audit.postgres.conninfo",
                    "audit.postgres: `conninfo` must not carry a password in the config file; \
                     use `conninfo_env` or `conninfo_file`"
                        .to_owned(),
                );
                return None;
            }
            return Some(SecretSource::Inline(text.clone()));
        }
        if let Some(var) = &raw.conninfo_env {
            if var.is_empty() {
                self.at_value(
                    "audit.postgres.conninfo_env",
                    "audit.postgres: conninfo_env is empty".to_owned(),
                );
            }
            return Some(SecretSource::Env(var.clone()));
        }
        raw.conninfo_file.as_ref().map(|file| {
            SecretSource::File(self.file_path("audit.postgres.conninfo_file", path, file))
        })
    }
}

/// Whether a libpq connection string (key=value or URL form) contains a password.
fn carries_password(conninfo: &str) -> bool {
    let lower = conninfo.to_ascii_lowercase();
    if lower.contains("password") {
        return true;
    }
    // postgresql://user:secret@host/db
    lower
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}
