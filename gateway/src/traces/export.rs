//! Finished spans to the collector, off the request path: a request hands its span to a
//! bounded queue (dropped and counted when full: a slow or absent collector never holds a
//! request up) and the `otlp-export` thread sends them in batches over OTLP, each export
//! bounded by the configured timeout (its spans counted as dropped when it fails).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use portcullis_policy::{OtlpProtocol, OtlpTls, TracingSettings};
use tokio::sync::mpsc;

use crate::metrics::TraceMetrics;

/// Spans sent in one export at most.
const MAX_BATCH: usize = 512;
/// How long a finished span waits for a batch to fill at most.
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);
/// How long a flush (at exit) waits for the exporter at most.
const FLUSH_WAIT: Duration = Duration::from_secs(3);

enum Control {
    /// Export everything queued, then answer.
    Flush(std::sync::mpsc::SyncSender<()>),
    /// Flush, then stop the thread.
    Shutdown(std::sync::mpsc::SyncSender<()>),
}

/// The SDK's span processor: each finished (sampled) span into the bounded queue.
#[derive(Debug)]
pub(super) struct SpanQueue {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Control>,
    metrics: TraceMetrics,
    stopped: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Flush(_) => "flush",
            Control::Shutdown(_) => "shutdown",
        })
    }
}

impl SpanQueue {
    /// Starts the exporter thread for `settings`; fails if the exporter cannot be built (an
    /// endpoint the OTLP client refuses).
    pub(super) fn start(
        settings: &TracingSettings,
        resource: Resource,
        metrics: TraceMetrics,
    ) -> Result<Self, String> {
        let (spans, spans_rx) = mpsc::channel(settings.max_queued_spans);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let settings = settings.clone();
        let thread_metrics = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("otlp-export".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("exporter runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    // Built inside the runtime: the gRPC channel spawns its worker on it.
                    let mut exporter = match exporter(&settings) {
                        Ok(exporter) => exporter,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    exporter.set_resource(&resource);
                    let _ = ready_tx.send(Ok(()));
                    Export {
                        exporter,
                        timeout: settings.timeout,
                        metrics: thread_metrics,
                        failures: 0,
                    }
                    .run(spans_rx, control_rx)
                    .await;
                });
            })
            .map_err(|e| format!("exporter thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("exporter thread ended at start".to_owned()),
        }
        Ok(Self {
            spans,
            control,
            metrics,
            stopped: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn ask(&self, make: fn(std::sync::mpsc::SyncSender<()>) -> Control, wait: Duration) -> bool {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        self.control.send(make(ack)).is_ok() && done.recv_timeout(wait).is_ok()
    }
}

fn exporter(settings: &TracingSettings) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithHttpConfig, WithTonicConfig};
    let built = match settings.protocol {
        OtlpProtocol::Grpc => {
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(settings.timeout);
            match &settings.tls {
                Some(tls) => builder.with_tls_config(grpc_tls(tls)?),
                None => builder,
            }
            .build()
        }
        _ => {
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(settings.timeout);
            match &settings.tls {
                Some(tls) => builder.with_http_client(https_client(tls, settings.timeout)?),
                None => builder,
            }
            .build()
        }
    };
    built.map_err(|e| format!("OTLP exporter for {}: {e}", settings.endpoint))
}

/// OTLP/HTTP over TLS: hyper with the gateway's own rustls configuration (its AEAD-only
/// provider, TLS 1.2 and 1.3), the configured CA or the webpki roots, and the client
/// certificate when one is configured.
fn https_client(
    tls: &OtlpTls,
    timeout: std::time::Duration,
) -> Result<
    opentelemetry_http::hyper::HyperClient<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
    String,
> {
    let roots = match &tls.ca {
        Some(ca) => portcullis_identity::load_certs(ca)
            .and_then(|certs| portcullis_identity::root_store(certs, "tracing.otlp.tls.ca"))
            .map_err(|e| e.to_string())?,
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = rustls::ClientConfig::builder_with_provider(portcullis_identity::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match &tls.client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                portcullis_identity::load_certs(cert).map_err(|e| e.to_string())?,
                portcullis_identity::load_private_key(key).map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("tracing.otlp.tls client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Ok(opentelemetry_http::hyper::HyperClient::new(
        connector, timeout, None,
    ))
}

/// OTLP/gRPC over TLS: tonic's rustls (ring), the configured CA or the webpki roots, and the
/// client certificate when one is configured.
fn grpc_tls(
    tls: &OtlpTls,
) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, String> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("tracing.otlp.tls: {}: {e}", path.display()))
    };
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => config.with_webpki_roots(),
    };
    if let Some((cert, key)) = &tls.client {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(config)
}

impl SpanProcessor for SpanQueue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() {
            self.metrics.dropped("queue_full", 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.ask(Control::Flush, FLUSH_WAIT) {
            Ok(())
        } else {
            Err(OTelSdkError::Timeout(FLUSH_WAIT))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let done = self.ask(Control::Shutdown, timeout);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let (true, Some(thread)) = (done, thread) {
            let _ = thread.join();
            Ok(())
        } else {
            // The thread is left to the process's exit.
            Err(OTelSdkError::Timeout(timeout))
        }
    }
}

/// The exporter thread's state.
struct Export {
    exporter: opentelemetry_otlp::SpanExporter,
    timeout: Duration,
    metrics: TraceMetrics,
    /// Exports failed in a row (logged at 1, 2, 4, 8…).
    failures: u64,
}

impl Export {
    async fn run(
        mut self,
        mut spans: mpsc::Receiver<SpanData>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut tick = tokio::time::interval(EXPORT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                span = spans.recv() => match span {
                    Some(span) => {
                        batch.push(span);
                        if batch.len() >= MAX_BATCH {
                            self.export(&mut batch).await;
                        }
                    }
                    None => break,
                },
                asked = control.recv() => {
                    let (ack, last) = match asked {
                        Some(Control::Flush(ack)) => (Some(ack), false),
                        Some(Control::Shutdown(ack)) => (Some(ack), true),
                        None => (None, true),
                    };
                    // What is queued now, in batches.
                    while let Ok(span) = spans.try_recv() {
                        batch.push(span);
                        if batch.len() >= MAX_BATCH {
                            self.export(&mut batch).await;
                        }
                    }
                    self.export(&mut batch).await;
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                    if last {
                        break;
                    }
                }
                _ = tick.tick() => self.export(&mut batch).await,
            }
        }
        let _ = self.exporter.shutdown_with_timeout(self.timeout);
    }

    async fn export(&mut self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
        let n = spans.len() as u64;
        let outcome = tokio::time::timeout(self.timeout, self.exporter.export(spans)).await;
        let error = match outcome {
            Ok(Ok(())) => {
                self.metrics.exported(n);
                self.failures = 0;
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.metrics.dropped("export_failed", n);
        self.failures += 1;
        if self.failures.is_power_of_two() {
            tracing::warn!(error, spans = n, failures = self.failures, "trace export failed; its spans are dropped (logged at 1, 2, 4, 8… failures in a row; portcullis_trace_spans_dropped_total counts them)");
        }
    }
}
