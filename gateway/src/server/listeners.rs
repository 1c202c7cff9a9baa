//! One service per listener and egress listener: its own proxy instance over its accept loop.

use super::*;

/// One listener as its own service: its accept loop (`connections`) over its own proxy
/// instance, which carries the listener's HTTP and HTTP/2 options. Handshakes read the
/// listener's certificate and verifier from the current generation.
/// What every listener's proxy shares.
pub(super) struct Shared {
    pub(super) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) audit: Option<Arc<AuditTrail>>,
    pub(super) fairness: Option<Arc<FairGate>>,
    pub(super) tracing: Option<Arc<crate::traces::Tracing>>,
}

pub(super) fn listener_service(
    server: &Server,
    listener: &ListenerConfig,
    index: usize,
    shared: &Shared,
    threads: usize,
) -> Result<GenBackgroundService<ListenerService>, GatewayError> {
    let limits = &listener.connections;
    let (snapshot, metrics) = (&shared.snapshot, &shared.metrics);
    let gateway = Gateway {
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
        audit: shared.audit.clone(),
        write_timeout: limits.write_timeout,
        refusal_lines: Default::default(),
        fairness: shared.fairness.clone(),
        egress: None,
        tracing: shared.tracing.clone(),
    };
    let mut proxy = pingora_proxy::http_proxy(&server.configuration, gateway);
    proxy.server_options = Some(connections::server_options(limits));
    proxy.h2_options = Some(connections::h2_options(limits));
    let config = server_config(
        || ListenerSlot::new(snapshot.clone(), index),
        &listener.name,
        listener.tls.client_auth,
        metrics.clone(),
    )?;
    let mut service = background_service(
        &format!("listener {}", listener.name),
        ListenerService {
            name: listener.name.clone(),
            index,
            address: listener.address,
            client_auth: listener.tls.client_auth,
            limits: limits.clone(),
            acceptor: Some(Arc::new(Acceptor::from_server_config(config))),
            proxy: Arc::new(proxy),
            metrics: metrics.clone(),
            audit: shared.audit.clone(),
        },
    );
    service.threads = Some(threads);
    Ok(service)
}

/// An egress listener: plain HTTP/1.1 on loopback from the local workload, whose requests its
/// own proxy instance judges as the workload's.
pub(super) fn egress_service(
    server: &Server,
    egress: &EgressConfig,
    shared: &Shared,
    threads: usize,
) -> GenBackgroundService<ListenerService> {
    let limits = &egress.connections;
    let gateway = Gateway {
        snapshot: shared.snapshot.clone(),
        metrics: shared.metrics.clone(),
        audit: shared.audit.clone(),
        write_timeout: limits.write_timeout,
        refusal_lines: Default::default(),
        fairness: shared.fairness.clone(),
        egress: Some(Arc::new(Workload::new(&egress.workload))),
        tracing: shared.tracing.clone(),
    };
    let mut proxy = pingora_proxy::http_proxy(&server.configuration, gateway);
    proxy.server_options = Some(connections::server_options(limits));
    let mut service = background_service(
        &format!("egress {}", egress.name),
        ListenerService {
            name: egress.name.clone(),
            index: usize::MAX,
            address: egress.address,
            client_auth: ClientAuth::Off,
            limits: limits.clone(),
            acceptor: None,
            proxy: Arc::new(proxy),
            metrics: shared.metrics.clone(),
            audit: shared.audit.clone(),
        },
    );
    service.threads = Some(threads);
    service
}
