//! The server's background work: upstream health checks, DNS discovery of upstream targets,
//! and the drain on SIGTERM.

use super::*;

/// Probes every pool with a health check at its interval, for whichever snapshot is current.
/// Also marks the process ready once its listeners accept connections.
pub(super) struct HealthChecks {
    pub(super) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(super) metrics: Arc<Metrics>,
    /// Ready means these accept connections.
    pub(super) listeners: Vec<std::net::SocketAddr>,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Services start side by side: answer ready only once every listener is listening.
        for addr in &self.listeners {
            while !crate::upgrade::is_listening(*addr) {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        }
        self.metrics.set_ready(true);
        // Under systemd (`Type=notify`): started, and SIGHUP is handled from here on, so
        // `systemctl reload` cannot reach a process that would die of it.
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %e, "could not tell systemd the gateway is ready");
        }
        let mut last: HashMap<UpstreamName, Instant> = HashMap::new();
        loop {
            let snapshot = self.snapshot.load_full();
            for (name, pool) in snapshot.pools.iter() {
                let Some(interval) = pool.health_interval() else {
                    continue;
                };
                if last.get(name).is_some_and(|t| t.elapsed() < interval) {
                    continue;
                }
                pool.check_health().await;
                last.insert(name.clone(), Instant::now());
            }
            last.retain(|name, _| snapshot.pools.contains_key(name));
            tokio::select! {
                _ = shutdown.changed() => {
                    self.metrics.set_ready(false);
                    return;
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// Asks DNS again for each discovered upstream of the current snapshot whose TTL has run out
/// (see `upstream/discovery.rs`), and has the pools take what changed: off every request's
/// path, one lookup per set at a time, all due sets at once.
pub(super) struct DnsRefresh {
    pub(super) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(super) metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for DnsRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The upstreams whose target gauge is exported.
        let mut gauged: Vec<UpstreamName> = Vec::new();
        loop {
            let snapshot = self.snapshot.load_full();
            let now = Instant::now();
            // Each set once, however many generations' pools share it.
            let mut sets: Vec<&Arc<crate::upstream::DiscoveredSet>> = Vec::new();
            for pool in snapshot.pools.values() {
                if let Some(set) = pool.discovered() {
                    if !sets.iter().any(|s| Arc::ptr_eq(s, set)) {
                        sets.push(set);
                    }
                }
            }
            let due = sets.iter().filter(|s| s.due(now)).map(|s| s.refresh());
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = futures::future::join_all(due) => {}
            }
            for set in &sets {
                let errors = set.take_errors();
                if errors > 0 {
                    self.metrics.discovery_errors(set.upstream.as_str(), errors);
                }
            }
            for pool in snapshot.pools.values() {
                if pool.discovered().is_some() {
                    pool.take_discovered().await;
                    self.metrics
                        .discovered_targets(pool.name.as_str(), pool.target_count());
                }
            }
            gauged.retain(|name| {
                let still = snapshot
                    .pools
                    .get(name)
                    .is_some_and(|p| p.discovered().is_some());
                if !still {
                    self.metrics.forget_discovered(name.as_str());
                }
                still
            });
            for pool in snapshot.pools.values() {
                if pool.discovered().is_some() && !gauged.contains(&pool.name) {
                    gauged.push(pool.name.clone());
                }
            }
            drop(sets);
            drop(snapshot);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// On SIGTERM pingora stops accepting and waits out the grace period. Exit as soon as the
/// requests in flight have finished instead of sleeping out the rest of it.
pub(super) fn spawn_drain_watch(
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    metrics: Arc<Metrics>,
    audit: Option<Arc<AuditTrail>>,
    tracing: Option<Arc<crate::traces::Tracing>>,
    grace: Duration,
) {
    let spawned = std::thread::Builder::new()
        .name("drain-watch".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::GracefulTerminate) => {
                    metrics.set_ready(false);
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                    let deadline = Instant::now() + grace;
                    tracing::info!(
                        in_flight = metrics.in_flight(),
                        grace_s = grace.as_secs_f64(),
                        "draining"
                    );
                    // Connections already accepted finish: the one in its handshake or before
                    // its first request gets its answer (then `Connection: close`); idle
                    // keep-alive ones are closed by the listeners, HTTP/2 ones sent GOAWAY.
                    std::thread::sleep(Duration::from_millis(200));
                    while (metrics.in_flight() > 0 || metrics.connections_open() > 0)
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    tracing::info!(
                        in_flight = metrics.in_flight(),
                        connections = metrics.connections_open(),
                        "drained; exiting"
                    );
                    if let Some(audit) = &audit {
                        audit.close();
                    }
                    crate::access_log::flush();
                    if let Some(tracing) = &tracing {
                        tracing.shutdown();
                    }
                    std::process::exit(0);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no drain watch: SIGTERM waits out the whole grace period");
    }
}
