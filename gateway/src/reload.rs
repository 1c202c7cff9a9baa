//! Reloading: what makes the gateway build a new generation, and the one place that stores it.
//!
//! - SIGHUP, or (with `--watch`) a change of the config file: the file is read and checked and
//!   a whole generation built from it.
//! - A renewed certificate of the gateway's own, or a changed CRL file (checked every second):
//!   a generation is built from the config in effect, reading the files again.
//!
//! Whatever fails leaves the running generation untouched; every config reload attempt is
//! recorded in the audit log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::audit::AuditTrail;
use crate::metrics::Metrics;
use crate::renew::Renewed;
use crate::server::{check_audit_key, load_config};
use crate::snapshot::Snapshot;
use crate::tls::{stamp, FileStamp};
use crate::GatewayError;

/// What reloading needs.
pub(crate) struct Reloader {
    pub path: PathBuf,
    pub watch: bool,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub audit: Option<Arc<AuditTrail>>,
    /// Certificates just renewed by the gateway itself.
    pub renewed: Receiver<Renewed>,
}

/// Why a new generation is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    FileChange,
    /// A newer policy bundle from the admin plane was kept.
    PolicyBundle,
    /// A renewed upstream client certificate: pools are rebuilt too.
    UpstreamRenewal,
    /// A renewed listener certificate or a changed CRL: listener TLS only.
    ListenerFiles,
}

impl Reloader {
    /// Runs the reload loop on its own thread (it reads files and builds pools: blocking work
    /// kept off the proxy's workers).
    pub(crate) fn spawn(self) -> Result<(), GatewayError> {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
            .map_err(|e| GatewayError::Signal(e.to_string()))?;
        let mut seen = stamp(&self.path);
        // The admin plane's policy bundle, kept by `follow.rs`: a change is a config reload.
        let cache = |snapshot: &Snapshot| {
            snapshot
                .config
                .policy_source
                .as_ref()
                .map(|p| p.cache.clone())
        };
        let mut bundle_seen = cache(&self.snapshot.load()).and_then(|p| stamp(&p));
        let mut crls = CrlStamps::of(&self.snapshot.load());
        let mut ticks = 0u32;
        std::thread::Builder::new()
            .name("config-reload".into())
            .spawn(move || loop {
                let hup = signals.pending().count() > 0;
                let changed = self.watch && {
                    let now = stamp(&self.path);
                    let changed = now.is_some() && now != seen;
                    seen = now;
                    changed
                };
                let renewed: Vec<Renewed> = self.renewed.try_iter().collect();
                let bundle = {
                    let now = cache(&self.snapshot.load()).and_then(|p| stamp(&p));
                    let changed = now.is_some() && now != bundle_seen;
                    bundle_seen = now;
                    changed
                };
                if hup || changed || bundle {
                    let trigger = if hup {
                        Trigger::Signal
                    } else if changed {
                        Trigger::FileChange
                    } else {
                        Trigger::PolicyBundle
                    };
                    self.apply(trigger);
                }
                if !renewed.is_empty() {
                    let trigger = if renewed.iter().any(|r| r.upstream) {
                        Trigger::UpstreamRenewal
                    } else {
                        Trigger::ListenerFiles
                    };
                    let ok = self.apply(trigger);
                    for renewal in renewed {
                        // The renewal task may have given up waiting; nothing to tell then.
                        let _ = renewal.applied.send(ok);
                    }
                }
                // Revocation lists are re-read within a second of changing.
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(5) {
                    let (changed, bundles) = crls.changed(&self.snapshot.load());
                    if !changed.is_empty() || bundles {
                        let ok = self.apply(Trigger::ListenerFiles);
                        for listener in &changed {
                            self.metrics.crl_load(listener, ok);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            })
            .map_err(|e| GatewayError::Signal(e.to_string()))?;
        Ok(())
    }

    /// Builds the next generation and stores it, or leaves the running one. Whether it was
    /// stored.
    fn apply(&self, trigger: Trigger) -> bool {
        let current = self.snapshot.load_full();
        let next = match trigger {
            Trigger::Signal | Trigger::FileChange | Trigger::PolicyBundle => {
                from_file(&self.path, &current)
            }
            Trigger::UpstreamRenewal => Snapshot::build((*current.config).clone(), Some(&current)),
            Trigger::ListenerFiles => current.with_fresh_tls(),
        };
        let config_reload = matches!(
            trigger,
            Trigger::Signal | Trigger::FileChange | Trigger::PolicyBundle
        );
        let label = match trigger {
            Trigger::Signal => "signal",
            Trigger::FileChange => "file change",
            Trigger::PolicyBundle => "policy bundle",
            Trigger::UpstreamRenewal => "certificate renewal",
            Trigger::ListenerFiles => "certificate or revocation list change",
        };
        if config_reload {
            if let Some(audit) = &self.audit {
                audit.config_loaded(file_digest(&self.path), label, next.is_err());
            }
        }
        match next {
            Ok(next) => {
                let serial = next.config.policy_serial;
                self.snapshot.store(Arc::new(next));
                if config_reload {
                    self.metrics.reload(true);
                    self.metrics.policy.in_effect(serial);
                }
                tracing::info!(config = %self.path.display(), trigger = label, "new configuration generation in effect");
                true
            }
            Err(e) => {
                if config_reload {
                    self.metrics.reload(false);
                }
                tracing::error!(config = %self.path.display(), trigger = label, error = %e, "reload refused; the running generation keeps serving");
                false
            }
        }
    }
}

/// A generation from the config file as it is now. Listener addresses, the metrics address and
/// the audit section are fixed at start-up, as are each listener's `connections` bounds.
fn from_file(path: &Path, current: &Snapshot) -> Result<Snapshot, GatewayError> {
    let config = load_config(path)?;
    check_audit_key(&config)?;
    if config.audit != current.audit {
        tracing::warn!("the `audit` section changed: takes effect at restart");
    }
    for listener in &config.listeners {
        let running = current
            .config
            .listeners
            .iter()
            .find(|l| l.name == listener.name);
        if running.is_some_and(|r| r.connections != listener.connections) {
            tracing::warn!(listener = %listener.name, "`connections` changed: takes effect at restart");
        }
    }
    Snapshot::build(config, Some(current))
}

/// The CRL and trust-domain bundle files of the running listeners, as last seen.
struct CrlStamps(HashMap<String, Option<FileStamp>>);

impl CrlStamps {
    fn of(snapshot: &Snapshot) -> Self {
        let mut stamps = Self(HashMap::new());
        stamps.changed(snapshot);
        stamps
    }

    /// The listeners whose CRL file changed since last seen, and whether any trust-domain
    /// bundle file did (a file that vanished is not a change: what is in force stays).
    fn changed(&mut self, snapshot: &Snapshot) -> (Vec<String>, bool) {
        let mut changed = Vec::new();
        let mut bundles = false;
        for listener in &snapshot.config.listeners {
            if let Some(path) = &listener.tls.crl {
                if self.moved(listener.name.clone(), path) {
                    changed.push(listener.name.clone());
                }
            }
            for td in &listener.tls.trust_domains {
                let key = format!("{}/bundle/{}", listener.name, td.name);
                bundles |= self.moved(key, &td.bundle);
            }
        }
        (changed, bundles)
    }

    /// Whether the file at `path`, seen as `key`, changed since it was last seen.
    fn moved(&mut self, key: String, path: &Path) -> bool {
        let now = stamp(path);
        let before = self.0.insert(key, now);
        now.is_some() && before.is_some_and(|b| b != now)
    }
}

/// The digest recorded for a config file (of the bytes read now; empty if unreadable).
pub(crate) fn file_digest(path: &Path) -> String {
    portcullis_audit::ConfigReload::digest_of(&std::fs::read(path).unwrap_or_default())
}
