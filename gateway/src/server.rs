//! Assembles and runs the pingora server: one service per listener (our accept loop in
//! `connections` over a pingora proxy carrying the listener's options), the operations listener, the health-check loop, reload on SIGHUP and draining on SIGTERM.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::listeners::TcpSocketOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{ExecutionPhase, RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{
    background_service, BackgroundService, GenBackgroundService,
};
use pingora_core::services::listening::Service;
use portcullis_policy::{ClientAuth, Config, EgressConfig, ListenerConfig, UpstreamName};

use crate::assertion::AssertionSigner;
use crate::audit::{AuditJobs, AuditTrail};
use crate::connections::{self, ListenerService};
use crate::fairness::FairGate;
use crate::metrics::{Metrics, OpsEndpoint};
use crate::proxy::{Gateway, Workload};
use crate::reload::{file_digest, Reloader};
use crate::renew::{self, Renewal, Renewals};
use crate::snapshot::Snapshot;
use crate::tls::{build_webpki_verifier, server_config, ListenerSlot, ListenerTls};
use crate::upgrade;
use crate::upstream::Pool;
use crate::{AuditSigners, GatewayError};

mod background;
mod listeners;

use background::{spawn_drain_watch, DnsRefresh, HealthChecks};
use listeners::{egress_service, listener_service, Shared};

/// Reads and checks a config file: the one entry point for `serve`, `check` and reload.
///
/// With `policy_source`, the tenants of the last verified policy bundle from the admin plane
/// (`follow.rs`) are laid over the file's.
pub fn load_config(path: &Path) -> Result<Config, GatewayError> {
    let text = std::fs::read_to_string(path).map_err(|e| GatewayError::file(path, e))?;
    let config = Config::from_yaml(&text, path).map_err(GatewayError::Config)?;
    let Some(source) = &config.policy_source else {
        return Ok(config);
    };
    match crate::follow::cached(source)? {
        None => Ok(config),
        Some(bundle) => {
            let mut config = crate::follow::apply(&text, path, &bundle)?;
            config.policy_serial = Some(bundle.serial);
            Ok(config)
        }
    }
}

/// Checks a config and everything it refers to (certificate files, keys, CA bundles) without
/// serving.
pub fn check(path: &Path) -> Result<Config, GatewayError> {
    let config = load_config(path)?;
    for listener in &config.listeners {
        let tls = &listener.tls;
        // A certificate the gateway obtains from the CA may not exist before it starts.
        if tls.issuer.is_some() && !tls.certificate.exists() {
            let crls = match &tls.crl {
                Some(path) => portcullis_identity::load_crls(path)?,
                None => Vec::new(),
            };
            build_webpki_verifier(tls, crls)?;
        } else {
            ListenerTls::load(listener)?;
        }
    }
    // Discovered upstreams are not looked up here: their sets stay empty.
    let discovered = crate::upstream::DiscoveryRegistry::default().sets_for(&config, false);
    for upstream in &config.upstreams {
        Pool::from_config(upstream, discovered.get(&upstream.name))?;
    }
    check_audit_key(&config)?;
    check_login_secrets(&config)?;
    if let Some(assertion) = &config.identity_assertion {
        use portcullis_policy::{AuditKey, SecretSource};
        match &assertion.signing_key {
            AuditKey::File(path) => {
                refuse_readable_secret("identity_assertion.signing_key", path)
                    .map_err(GatewayError::IdentityProvider)?;
                crate::assertion::file_key(path)?;
            }
            AuditKey::Pkcs11 {
                pin: SecretSource::File(pin),
                ..
            } => refuse_readable_secret("identity_assertion.signing_pkcs11 PIN file", pin)
                .map_err(GatewayError::IdentityProvider)?,
            AuditKey::Pkcs11 { .. } => {}
        }
    }
    if let Some(pg) = config.audit.as_ref().and_then(|a| a.postgres.as_ref()) {
        crate::audit::store_tls(&pg.tls)?;
    }
    if let Some(fleet) = &config.fleet {
        let status = Arc::new(portcullis_fleet::FleetStatus::default());
        portcullis_fleet::RevokedSet::load(&fleet.cache, status).map_err(fleet_error)?;
        portcullis_fleet::EtcdStore::new(fleet.settings.clone()).map_err(fleet_error)?;
    }
    Ok(config)
}

fn fleet_error(e: portcullis_fleet::FleetError) -> GatewayError {
    GatewayError::Fleet(e.to_string())
}

/// Loads the fleet's revocation set from its cache (in force at once, before etcd answers)
/// and starts following etcd on its own thread.
fn start_fleet(
    fleet: &portcullis_policy::FleetConfig,
    metrics: &Metrics,
) -> Result<Arc<portcullis_fleet::RevokedSet>, GatewayError> {
    let status = Arc::new(portcullis_fleet::FleetStatus::default());
    let set = Arc::new(
        portcullis_fleet::RevokedSet::load(&fleet.cache, Arc::clone(&status))
            .map_err(fleet_error)?,
    );
    let store = portcullis_fleet::EtcdStore::new(fleet.settings.clone()).map_err(fleet_error)?;
    metrics.fleet.follow(Arc::clone(&status));
    portcullis_fleet::follow(Arc::clone(&set), Arc::new(store), status).map_err(fleet_error)?;
    tracing::info!(
        fleet.endpoints = ?fleet.settings.endpoints,
        fleet.prefix = %fleet.settings.prefix,
        fleet.revocations = set.len(),
        fleet.cache = %fleet.cache.display(),
        "following the fleet's revocation set on etcd (the cached set in force meanwhile)"
    );
    Ok(set)
}

/// A key, PIN, connection-string or client-key file of the audit log that group or others can read is a
/// check failure (the log itself would refuse the key and the PIN at start).
pub(crate) fn check_audit_key(config: &Config) -> Result<(), GatewayError> {
    use portcullis_policy::{AuditKey, PostgresTls, SecretSource};
    let Some(audit) = &config.audit else {
        return Ok(());
    };
    let key = match &audit.signing_key {
        AuditKey::File(key) => Some(("audit key", key)),
        AuditKey::Pkcs11 {
            pin: SecretSource::File(pin),
            ..
        } => Some(("audit key PIN file", pin)),
        AuditKey::Pkcs11 { .. } => None,
    };
    let mut store = Vec::new();
    if let Some(postgres) = &audit.postgres {
        if let SecretSource::File(file) = &postgres.conninfo {
            store.push(("audit.postgres connection file", file));
        }
        if let PostgresTls::VerifyFull {
            client: Some((_, key)),
            ..
        } = &postgres.tls
        {
            store.push(("audit.postgres client key", key));
        }
    }
    for (what, path) in key.into_iter().chain(store) {
        refuse_readable_secret(what, path).map_err(GatewayError::Audit)?;
    }
    Ok(())
}

/// The browser login's secrets: the session key ring and each provider's client secret must
/// be readable by the gateway and by no one else.
fn check_login_secrets(config: &Config) -> Result<(), GatewayError> {
    use portcullis_policy::SecretSource;
    let fail = |e: String| GatewayError::IdentityProvider(e);
    if let Some(sessions) = &config.sessions {
        refuse_readable_secret("sessions.key_ring", &sessions.key_ring).map_err(fail)?;
        portcullis_identity::oidc::KeyRing::load(&sessions.key_ring)
            .map_err(|e| fail(format!("sessions.key_ring {e}")))?;
    }
    for provider in config.tenants.iter().flat_map(|t| &t.identity_providers) {
        let Some(login) = &provider.login else {
            continue;
        };
        let what = format!(
            "identity provider {}: client secret",
            provider.settings.name
        );
        if let SecretSource::File(path) = &login.client_secret {
            refuse_readable_secret(&what, path).map_err(fail)?;
        }
        crate::audit::read_secret(&login.client_secret, &what).map_err(fail)?;
    }
    Ok(())
}

fn refuse_readable_secret(what: &str, path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => Err(format!(
            "{what} {} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        )),
        // A missing key is created at start; a missing PIN or connection file is named there.
        _ => Ok(()),
    }
}

/// How `serve` runs besides its config.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Also reload when the config file changes (as SIGHUP does).
    pub watch: bool,
    /// Where this gateway hands its listening sockets to a new one (`upgrade`); `None`: no
    /// upgrade socket.
    pub upgrade_socket: Option<PathBuf>,
    /// Take over the listening sockets of the gateway running with `upgrade_socket`.
    pub upgrade: bool,
}

/// Serves until SIGINT (immediate) or SIGTERM (drain, then exit). With `watch`, a change of
/// the config file reloads it as SIGHUP does. With `upgrade`, takes the listening sockets of
/// the gateway running with the same `upgrade_socket`, which then drains and exits.
pub fn serve(
    config_path: PathBuf,
    options: ServeOptions,
    signers: &AuditSigners,
) -> Result<(), GatewayError> {
    let ServeOptions {
        watch,
        upgrade_socket,
        upgrade,
    } = options;
    let config = load_config(&config_path)?;
    let issued = renew::issued(&config);
    for certificate in &issued {
        renew::prepare(certificate)?;
    }
    let config = check(&config_path)?;
    let activated = upgrade::from_systemd()?;
    if upgrade {
        let socket = upgrade_socket.as_ref().ok_or_else(|| {
            GatewayError::Upgrade("--upgrade needs --upgrade-socket, the running gateway's".into())
        })?;
        let count = upgrade::receive(socket)?;
        tracing::info!(
            sockets = count,
            "listening sockets taken over from the running gateway"
        );
    }
    let addresses: Vec<_> = config
        .listeners
        .iter()
        .map(|l| l.address)
        .chain(config.egress.iter().map(|e| e.address))
        .collect();
    // A socket systemd listens on for us that no listener serves would take connections
    // nobody answers: the socket unit and the config disagree.
    if let Some(stray) = activated.iter().find(|a| !addresses.contains(a)) {
        return Err(GatewayError::SocketActivation(format!(
            "systemd passed a listening socket for {stray} (portcullis.socket's ListenStream=), \
             but no listener or egress in {} has that address",
            config_path.display()
        )));
    }
    if !activated.is_empty() {
        tracing::info!(
            sockets = activated.len(),
            "listening sockets passed by systemd (socket activation)"
        );
    }
    upgrade::keep_only(&addresses);
    for &address in &addresses {
        if !upgrade::is_inherited(address) {
            ensure_bindable(address)?;
        }
    }
    // Shared by the old and the new gateway while they overlap (SO_REUSEPORT).
    if !upgrade {
        ensure_bindable(config.metrics.address)?;
    }

    let metrics = Arc::new(Metrics::new());
    let audit = match &config.audit {
        Some(settings) => {
            let signer = signers(&settings.signing_key).map_err(GatewayError::Audit)?;
            Some(Arc::new(open_audit(settings, signer, upgrade)?))
        }
        None => {
            tracing::warn!("no `audit` section: requests are not recorded in an audit log");
            None
        }
    };
    if let Some(audit) = &audit {
        audit.config_loaded(file_digest(&config_path), "startup", false);
    }
    let tracing = match &config.tracing {
        Some(settings) => {
            let tracing =
                crate::traces::Tracing::start(settings, &metrics).map_err(GatewayError::Tracing)?;
            tracing::info!(
                endpoint = %settings.endpoint,
                protocol = ?settings.protocol,
                sampling.ratio = settings.ratio,
                "traces exported over OTLP"
            );
            Some(Arc::new(tracing))
        }
        None => None,
    };
    let grace = config.shutdown_grace;
    let mut server_conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    server_conf.upstream_keepalive_pool_size = 1024;
    // pingora's "fast" timeouts share one clock thread that write-locks every worker's timer
    // tree every 10 ms; when that thread is descheduled on a busy machine, workers registering
    // a timeout block behind it (seen as 5-50 ms p99 stalls at any load). Tokio's per-worker
    // timers have no such lock: use them for every timeout of a second or more.
    server_conf.fast_timeout_to_tokio_threshold_seconds = Some(0);
    let mut server = Server::new_with_opt_and_conf(None, server_conf);
    server.bootstrap();

    let listeners = config.listeners.clone();
    let egresses = config.egress.clone();
    let metrics_addr = config.metrics.address;
    let assertion = match &config.identity_assertion {
        None => None,
        Some(settings) => {
            let key = match &settings.signing_key {
                portcullis_policy::AuditKey::File(path) => crate::assertion::file_key(path)?,
                pkcs11 => signers(pkcs11).map_err(|e| {
                    GatewayError::IdentityProvider(format!(
                        "identity_assertion.signing_pkcs11: {e}"
                    ))
                })?,
            };
            Some(Arc::new(AssertionSigner::new(key, settings)?))
        }
    };
    let policy_source = config.policy_source.clone();
    metrics.policy.in_effect(config.policy_serial);
    let fleet = match &config.fleet {
        Some(fleet) => Some(start_fleet(fleet, &metrics)?),
        None => None,
    };
    let mut first = Snapshot::build(config, None)?;
    first.assertion = assertion;
    first.fleet = fleet;
    let snapshot = Arc::new(ArcSwap::from_pointee(first));
    // Identity providers' keys: fetched in the background from now on; a token arriving
    // before the first fetch asks for one itself.
    snapshot.load().key_sets.spawn_refresher(metrics.clone())?;

    let threads = server_conf_threads(&server);
    // One cap for every listener; like the listeners, set at start.
    let shared = Shared {
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
        audit: audit.clone(),
        fairness: snapshot.load().config.fairness.map(FairGate::new),
        tracing: tracing.clone(),
    };
    for (index, listener) in listeners.iter().enumerate() {
        server.add_service(listener_service(
            &server, listener, index, &shared, threads,
        )?);
        tracing::info!(
            listener = %listener.name,
            address = %listener.address,
            client_auth = ?listener.tls.client_auth,
            "listening"
        );
    }
    for egress in &egresses {
        server.add_service(egress_service(&server, egress, &shared, threads));
        tracing::info!(
            listener = %egress.name,
            address = %egress.address,
            workload = %egress.workload,
            "listening for the workload's outbound requests (egress)"
        );
    }

    // Renewed certificates are announced to the reloader, which builds the next generation.
    let (renewed_tx, renewed_rx) = std::sync::mpsc::channel();
    let renewals: Vec<Renewal> = issued
        .into_iter()
        .map(|issued| Renewal {
            issued,
            reloader: renewed_tx.clone(),
        })
        .collect();

    let mut ops = Service::new(
        "operations".to_owned(),
        OpsEndpoint {
            metrics: metrics.clone(),
            audit: audit.clone(),
            snapshot: snapshot.clone(),
        },
    );
    let mut reuse = TcpSocketOptions::default();
    reuse.so_reuseport = Some(true);
    ops.add_tcp_with_settings(&metrics_addr.to_string(), reuse);
    server.add_service(ops);
    tracing::info!(address = %metrics_addr, "metrics and health listening");

    server.add_service(background_service(
        "upstream health",
        HealthChecks {
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
            listeners: listeners.iter().map(|l| l.address).collect(),
        },
    ));

    server.add_service(background_service(
        "upstream discovery",
        DnsRefresh {
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
        },
    ));

    if !renewals.is_empty() {
        server.add_service(background_service(
            "certificate renewal",
            Renewals {
                renewals,
                metrics: metrics.clone(),
            },
        ));
    }
    if let Some(trail) = &audit {
        server.add_service(background_service(
            "audit shipping and retention",
            AuditJobs {
                trail: trail.clone(),
            },
        ));
    }

    if let Some(source) = policy_source {
        crate::follow::spawn(source, config_path.clone(), metrics.clone())?;
    }
    let reloader = Reloader {
        path: config_path,
        watch,
        snapshot,
        metrics: metrics.clone(),
        audit: audit.clone(),
        renewed: renewed_rx,
    };
    reloader.spawn()?;
    crate::bundles::spawn(&listeners, metrics.clone())?;
    if let Some(path) = &upgrade_socket {
        upgrade::serve_handover(path)?;
    }
    spawn_drain_watch(
        server.watch_execution_phase(),
        metrics,
        audit,
        tracing.clone(),
        grace,
    );
    server.run(RunArgs::default());
    crate::access_log::flush();
    if let Some(tracing) = &tracing {
        tracing.shutdown();
    }
    Ok(())
}

/// Opens the audit log. Taking over from a running gateway, waits for it to finish its
/// requests and release the log (one log, one writer); connections meanwhile wait in the
/// listening sockets' queue.
fn open_audit(
    settings: &portcullis_policy::AuditSettings,
    signer: Arc<dyn portcullis_audit::Signer>,
    upgrade: bool,
) -> Result<AuditTrail, GatewayError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut waited = false;
    loop {
        match AuditTrail::open(settings, Arc::clone(&signer)) {
            Err(GatewayError::AuditInUse(dir))
                if upgrade && std::time::Instant::now() < deadline =>
            {
                if !waited {
                    tracing::info!(audit.dir = %dir, "waiting for the gateway being replaced to release the audit log");
                    waited = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn server_conf_threads(server: &Server) -> usize {
    server.configuration.threads.max(1)
}

/// Binding fails inside pingora with a panic; check first so the operator gets a clear error.
fn ensure_bindable(addr: std::net::SocketAddr) -> Result<(), GatewayError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| GatewayError::Bind { addr, source: e })
}
