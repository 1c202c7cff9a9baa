//! The listener: TCP accept under the connection caps, then each connection served by
//! [`Connections`] (TLS handshake with the client certificate optional, verified by
//! [`ClientTrust`]; the verified peer identity attached to each request; HTTP/1.1 and HTTP/2;
//! deadlines); background CRL reload/refresh and server-certificate renewal.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_audit::AuditHandle;
use portcullis_ca::{Ca, CaConfig, CaEventSink};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::api::{router, AppState};
use crate::config::{AdminConfig, SelfIssueConfig, ServingCertSource};
use crate::connections::{ConnectionCounts, Connections};
use crate::error::AdminError;
use crate::limits::{LogBudget, RequestLimits};
use crate::revocation_http::Revocation;
use crate::stats::{IssuanceStats, StatsSnapshot};
use crate::store::{mark_state_dir, PgStore};
use portcullis_identity::ServerCertificate;

use crate::tls::{issue_serving, load_serving_files, provider, renew_serving, ClientTrust};
use crate::token::{SqliteTokenStore, TokenStore};

/// How long `run` waits for open connections after shutdown is asked (each connection also
/// bounds its own end).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(6);

/// The admin API server, bound and ready to [`run`](AdminServer::run).
pub struct AdminServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    connections: Arc<Connections>,
    state: Arc<AppState>,
    crl_poll: Duration,
    renewal: Option<ServingRenewal>,
    metrics: Option<TcpListener>,
    /// The plain-HTTP CRL and OCSP listener, when configured.
    revocation: Option<(TcpListener, Arc<Revocation>)>,
    /// Publishing revocations to the fleet's etcd, when configured.
    fleet: Option<Arc<portcullis_fleet::FleetStatus>>,
}

/// What renewing the server's own, self-issued certificate takes.
struct ServingRenewal {
    /// The CA as handed in (not the API's, which records in the server's audit log).
    ca: Arc<Ca>,
    config: SelfIssueConfig,
    serving: Arc<ServerCertificate>,
    issued_at: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Opens the CA named by `config.ca` (logging in to its HSM), then [`AdminServer::bind_with`].
    /// With `store.postgres`, the inventory and bootstrap tokens are the database's (migrated
    /// first; `STATE/state-in-postgres` is written), not the state directory's SQLite files.
    pub async fn bind(
        config: &AdminConfig,
        audit: Option<AuditHandle>,
    ) -> Result<Self, AdminError> {
        let path = config.ca.clone();
        let postgres = config.store.postgres.clone();
        let (ca, store) =
            tokio::task::spawn_blocking(move || -> Result<(Ca, Option<PgStore>), AdminError> {
                let ca_config = CaConfig::load(&path)?;
                let Some(pg) = postgres else {
                    return Ok((Ca::open(&ca_config)?, None));
                };
                let store = PgStore::open(&pg)?;
                let ca = Ca::open_with_inventory(&ca_config, Arc::new(store.inventory()))?;
                mark_state_dir(ca.state_dir())?;
                Ok((ca, Some(store)))
            })
            .await
            .map_err(|e| AdminError::Invalid(format!("opening the CA: {e}")))??;
        match store {
            Some(store) => {
                let tokens = Arc::new(store.tokens());
                Self::bind_on(config, Arc::new(ca), tokens, Some(store), audit).await
            }
            None => Self::bind_with(config, Arc::new(ca), audit).await,
        }
    }

    /// Builds the server on an opened CA: obtains the server certificate (self-issued or from
    /// files), loads the trust bundle and CRL, opens the token store (`STATE/tokens.sqlite3`)
    /// and binds the listener.
    ///
    /// `audit` receives the record of every call and, through the CA, the events of the
    /// issuances, refusals and revocations the API asks of it. The server's own certificate is
    /// issued by `ca` as handed in (recorded in its event sink, if it has one).
    pub async fn bind_with(
        config: &AdminConfig,
        ca: Arc<Ca>,
        audit: Option<AuditHandle>,
    ) -> Result<Self, AdminError> {
        let tokens: Arc<dyn TokenStore> = Arc::new(SqliteTokenStore::in_state_dir(ca.state_dir())?);
        Self::bind_with_tokens(config, ca, tokens, audit).await
    }

    /// As [`AdminServer::bind_with`], with a given token store. With `store.postgres`, the
    /// policies, webhooks and issuances waiting for approval are the database's (opened here).
    pub async fn bind_with_tokens(
        config: &AdminConfig,
        ca: Arc<Ca>,
        tokens: Arc<dyn TokenStore>,
        audit: Option<AuditHandle>,
    ) -> Result<Self, AdminError> {
        let store = match config.store.postgres.clone() {
            Some(pg) => Some(
                tokio::task::spawn_blocking(move || PgStore::open(&pg))
                    .await
                    .map_err(|e| AdminError::Store(format!("opening the store: {e}")))??,
            ),
            None => None,
        };
        Self::bind_on(config, ca, tokens, store, audit).await
    }

    async fn bind_on(
        config: &AdminConfig,
        ca: Arc<Ca>,
        tokens: Arc<dyn TokenStore>,
        store: Option<PgStore>,
        audit: Option<AuditHandle>,
    ) -> Result<Self, AdminError> {
        let source = config.serving_cert().map_err(|detail| AdminError::Config {
            path: "(admin config)".to_owned(),
            detail,
        })?;
        config
            .check_operators(ca.profiles())
            .map_err(|detail| AdminError::Config {
                path: "(admin config)".to_owned(),
                detail,
            })?;
        let agents = config
            .checked_agents()
            .map_err(|detail| AdminError::Config {
                path: "(admin config)".to_owned(),
                detail,
            })?;
        let (serving, renewal) = match source {
            ServingCertSource::SelfIssue(cfg) => {
                let (ca2, cfg2) = (Arc::clone(&ca), cfg.clone());
                let now = SystemTime::now();
                let (key, issued) =
                    tokio::task::spawn_blocking(move || issue_serving(&ca2, &cfg2, now))
                        .await
                        .map_err(|e| {
                            AdminError::Tls(format!("issuing the server certificate: {e}"))
                        })??;
                tracing::info!(ca.serial = %issued.serial, "admin server certificate issued by the CA");
                let serving = Arc::new(ServerCertificate::new(key));
                let renewal = ServingRenewal {
                    ca: Arc::clone(&ca),
                    config: cfg,
                    serving: Arc::clone(&serving),
                    issued_at: now,
                    not_after: issued.not_after,
                };
                (serving, Some(renewal))
            }
            ServingCertSource::Files {
                certificate,
                private_key,
            } => (
                Arc::new(ServerCertificate::new(load_serving_files(
                    &certificate,
                    &private_key,
                )?)),
                None,
            ),
        };
        let trust = Arc::new(ClientTrust::new(
            ca.trust_bundle_pem(),
            ca.intermediate_pem(),
            &ca.crl_path(),
        )?);
        let mut tls = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| AdminError::Tls(e.to_string()))?
            .with_client_cert_verifier(trust.verifier())
            .with_cert_resolver(serving);
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        // Every revocation is also spooled for the fleet's etcd (the CLI's and ACME's too,
        // since they go through this CA).
        let (ca, fleet) = match &config.fleet {
            Some(fleet) => {
                let (status, sink) = crate::fleet::start(fleet, ca.state_dir())?;
                (
                    Arc::new(Ca::clone(&ca).with_revocation_sink(sink)),
                    Some(status),
                )
            }
            None => (ca, None),
        };
        let stats = Arc::new(IssuanceStats::default());
        let webhooks = match &config.webhooks {
            Some(w) => Some(
                crate::webhooks::Webhooks::open(
                    w,
                    ca.state_dir(),
                    store.as_ref(),
                    Arc::clone(&stats),
                )
                .map_err(|detail| AdminError::Config {
                    path: "(admin config) webhooks".to_owned(),
                    detail,
                })?,
            ),
            None => None,
        };
        let mut sinks: Vec<Arc<dyn CaEventSink>> = Vec::new();
        if let Some(audit) = &audit {
            sinks.push(Arc::new(audit.clone()));
        }
        if let Some(w) = &webhooks {
            sinks.push(Arc::clone(w) as Arc<dyn CaEventSink>);
        }
        let ca = match sinks.len() {
            0 => ca,
            1 => Arc::new(Ca::clone(&ca).with_event_sink(sinks.remove(0))),
            _ => Arc::new(Ca::clone(&ca).with_event_sink(Arc::new(crate::webhooks::Fanout(sinks)))),
        };
        let acme = if config.acme.enabled {
            // Blocking: the SQLite file, or the PostgreSQL round trips of the seal key check.
            let (state_dir, acme_config, pg) = (
                ca.state_dir().to_owned(),
                config.acme.clone(),
                store.clone(),
            );
            let opened = tokio::task::spawn_blocking(move || {
                crate::acme::AcmeService::open(&state_dir, &acme_config, pg.as_ref())
            })
            .await
            .map_err(|e| AdminError::Store(format!("opening the ACME store: {e}")))??;
            Some(Arc::new(opened))
        } else {
            None
        };
        let policies = match config.policies.clone() {
            Some(p) => {
                // Blocking: the SQLite file or the PostgreSQL round trips of the key check.
                let (state_dir, pg) = (ca.state_dir().to_owned(), store.clone());
                let opened = tokio::task::spawn_blocking(move || {
                    crate::policies::Policies::open(&p, &state_dir, pg.as_ref())
                })
                .await
                .map_err(|e| AdminError::Store(format!("opening the policy store: {e}")))?;
                Some(Arc::new(opened.map_err(|detail| AdminError::Config {
                    path: "(admin config) policies".to_owned(),
                    detail,
                })?))
            }
            None => None,
        };
        let people = if config.identity_providers.is_empty() {
            None
        } else {
            Some(Arc::new(
                crate::people::Providers::new(&config.identity_providers).map_err(|detail| {
                    AdminError::Config {
                        path: "(admin config) identity_providers".to_owned(),
                        detail,
                    }
                })?,
            ))
        };
        // Issuances waiting for approval: in the shared database with `store.postgres`, so
        // any node decides them; else in the state directory.
        let pending: Option<Arc<dyn crate::pending::PendingStore>> =
            match (ca.profiles().iter().any(|p| p.approval.is_some()), &store) {
                (false, _) => None,
                (true, Some(pg)) => Some(Arc::new(pg.pending())),
                (true, None) => {
                    let dir = ca.state_dir().to_owned();
                    Some(Arc::new(
                        tokio::task::spawn_blocking(move || {
                            crate::pending::SqlitePendingStore::in_state_dir(&dir)
                        })
                        .await
                        .map_err(|e| {
                            AdminError::Store(format!("opening the pending store: {e}"))
                        })??,
                    ))
                }
            };
        let state = Arc::new(AppState {
            ca,
            tokens,
            operators: config.operators.iter().cloned().collect::<HashSet<_>>(),
            agents,
            audit,
            stats: Arc::clone(&stats),
            limits: RequestLimits::new(&config.rate_limits, Arc::clone(&stats)),
            trust,
            crl_dirty: AtomicBool::new(false),
            acme,
            roles: config.roles.clone(),
            policies,
            people,
            mfa_for_writes: config.mfa_for_writes,
            persons: crate::persons::Persons::new(&config.persons),
            webhooks,
            pending,
        });
        let listen_error = |source| AdminError::Listen {
            addr: config.listen,
            source,
        };
        // The socket systemd holds across restarts (portcullis-admin.socket), else our own.
        let listener = match crate::activation::take(config.listen) {
            Some(passed) => {
                passed.set_nonblocking(true).map_err(listen_error)?;
                tracing::info!(listen.addr = %config.listen, "admin API: listening socket passed by systemd (socket activation)");
                TcpListener::from_std(passed).map_err(listen_error)?
            }
            None => TcpListener::bind(config.listen)
                .await
                .map_err(listen_error)?,
        };
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let metrics = match config.metrics {
            Some(addr) => Some(crate::metrics::bind(addr).await?),
            None => None,
        };
        let revocation = match config.revocation_http {
            Some(addr) => {
                Some(Revocation::bind(addr, Arc::clone(&state.ca), Arc::clone(&state.trust)).await?)
            }
            None => None,
        };
        let connections = Arc::new(Connections {
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            router: router(Arc::clone(&state)),
            config: config.connections.clone(),
            counts: ConnectionCounts::new(&config.connections, Arc::clone(&stats)),
            stats,
            log: LogBudget::new(),
        });
        Ok(Self {
            listener,
            local_addr,
            connections,
            state,
            crl_poll: config.crl_poll_interval,
            renewal,
            metrics,
            revocation,
            fleet,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound address of the metrics listener, if one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Issuance counts so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats.snapshot()
    }

    /// The live counters, readable after [`AdminServer::run`] took the server.
    pub fn stats_handle(&self) -> Arc<IssuanceStats> {
        Arc::clone(&self.state.stats)
    }

    /// Serves until `shutdown` completes; then stops accepting, lets open connections finish
    /// for up to 5 s, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AdminError> {
        let mut background = tokio::task::JoinSet::new();
        background.spawn(crl_watch(Arc::clone(&self.state), self.crl_poll));
        if let Some(w) = &self.state.webhooks {
            background.spawn(Arc::clone(w).deliver());
            background.spawn(Arc::clone(w).scan_expiring(Arc::clone(&self.state.ca)));
            background.spawn(Arc::clone(w).scan_dlp_spikes());
        }
        if let Some(listener) = self.metrics {
            background.spawn(crate::metrics::serve(
                listener,
                Arc::clone(&self.state.stats),
                self.fleet.clone(),
            ));
        }
        if let Some((listener, revocation)) = self.revocation {
            background.spawn(crate::revocation_http::serve(listener, revocation));
        }
        if let Some(r) = self.renewal {
            background.spawn(renew_serving(
                r.ca,
                r.config,
                r.serving,
                r.issued_at,
                r.not_after,
            ));
        }
        tracing::info!(listen.addr = %self.local_addr, "admin API listening");

        // Dropped at shutdown: every connection sees its receiver change.
        let (stop, stopping) = tokio::sync::watch::channel(());
        // Each connection holds a sender; `recv` returns None once all have ended.
        let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            let (tcp, remote) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "admin API: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Over a cap: the socket is closed here, before any TLS.
            let Some(slot) = self.connections.admit(remote) else {
                continue;
            };
            let (connections, stopping, open) = (
                Arc::clone(&self.connections),
                stopping.clone(),
                open.clone(),
            );
            let span = tracing::info_span!("admin.conn", client.addr = %remote);
            tokio::spawn(
                async move {
                    connections.serve(slot, tcp, remote, stopping).await;
                    drop(open);
                }
                .instrument(span),
            );
        }
        drop(self.listener);
        drop((stop, open));
        if tokio::time::timeout(SHUTDOWN_WAIT, all_closed.recv())
            .await
            .is_err()
        {
            tracing::warn!("admin API: connections still open after the grace period");
        }
        background.abort_all();
        Ok(())
    }
}

/// Re-reads `STATE/crl.pem` when it changes, and publishes a fresh CRL when the current one is
/// past half of its validity or a revocation could not be published.
async fn crl_watch(state: Arc<AppState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = Arc::clone(&state);
        let outcome = tokio::task::spawn_blocking(move || {
            if let Err(e) = st.trust.reload() {
                tracing::warn!(error = %e, "admin API: CRL reload failed; the previous CRL stays in force");
            }
            let crl = st.trust.crl();
            let stale = match (crl.this_update, crl.next_update) {
                (Some(this), Some(next)) => {
                    let half = next.duration_since(this).unwrap_or_default() / 2;
                    SystemTime::now() >= this + half
                }
                _ => false,
            };
            if stale || st.crl_dirty.load(Ordering::Acquire) {
                match st.ca.publish_crl(SystemTime::now()) {
                    Ok(_) => {
                        st.crl_dirty.store(false, Ordering::Release);
                        if let Err(e) = st.trust.reload() {
                            tracing::warn!(error = %e, "admin API: CRL reload failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "admin API: CRL refresh failed"),
                }
            }
        })
        .await;
        if let Err(e) = outcome {
            tracing::error!(error = %e, "admin API: CRL watch task failed");
        }
    }
}
