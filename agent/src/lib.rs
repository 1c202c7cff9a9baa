//! `portcullis agent`: a node-local agent serving the SPIFFE Workload API on a Unix socket.
//! It attests each caller from the socket's peer credentials (uid, gid, and the executable of
//! its pid) against the registered workloads, and hands it X.509-SVIDs that it obtains from
//! the admin API with its own node certificate (the admin API's `agents:` grants bound what
//! it may ask for) and rotates at half their lifetime. It is a client of the admin API only:
//! it holds no CA key and does not link the CA.
//!
//! The Workload API is generated at build time from `proto/workload.proto` (the SPIFFE
//! project's file) by protox and tonic-prost-build: no `protoc` is needed.

mod attest;
mod authority;
mod config;
mod error;
mod node;
mod svid;
mod workload_api;

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;

pub use config::{AdminEndpoint, AgentConfig, NodeIdentity, Selectors, WorkloadEntry};
pub use error::AgentError;
pub use workload_api::SECURITY_HEADER;

use error::io_error;

/// The Workload API's messages, server and client, generated from the SPIFFE project's
/// `workload.proto` (it declares no protobuf package: the service is `/SpiffeWorkloadAPI/`).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rustdoc::invalid_html_tags
)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// Runs the agent with the configuration in `path` until SIGINT or SIGTERM.
pub fn run(path: &Path) -> Result<(), AgentError> {
    let config = AgentConfig::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AgentError::Serve(format!("runtime: {e}")))?;
    runtime.block_on(serve(config, stop_signal()))
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the process is stopped by the default action instead.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Obtains the node certificate if needed, opens the socket, keeps every workload's SVID
/// current and serves the Workload API until `shutdown` resolves; then open streams end and
/// the socket file is removed.
pub async fn serve(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let config = Arc::new(config);
    let node = Arc::new(node::Node {
        admin: config.admin.clone(),
        identity: config.node.clone(),
    });
    node.prepare().await?;
    let listener = bind_socket(&config.socket)?;
    tracing::info!(agent.socket = %config.socket.display(), workload.entries = config.workloads.len(), "Workload API listening");

    let (stop_tx, stop) = watch::channel(false);
    let store = Arc::new(svid::SvidStore::new(config.workloads.len()));
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (node, stop) = (Arc::clone(&node), stop.clone());
        tasks.spawn(async move { node.keep_renewed(stop).await });
    }
    for index in 0..config.workloads.len() {
        tasks.spawn(svid::keep_rotated(
            index,
            Arc::clone(&config),
            Arc::clone(&node),
            Arc::clone(&store),
            stop.clone(),
        ));
    }
    let api = workload_api::WorkloadApi {
        workloads: Arc::new(config.workloads.clone()),
        store,
        stop,
    };
    // Each connection through the relay that makes grpc-core clients' `:authority` readable.
    let incoming =
        UnixListenerStream::new(listener).map(|accepted| accepted.map(authority::Relayed::start));
    let served = tonic::transport::Server::builder()
        .add_service(proto::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(api))
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
    tasks.shutdown().await;
    let _ = std::fs::remove_file(&config.socket);
    tracing::info!(agent.socket = %config.socket.display(), "Workload API stopped");
    served.map_err(|e| AgentError::Serve(e.to_string()))
}

/// Binds the socket: its folder created (0755) if missing, a stale socket file from an
/// earlier run removed (not one an agent still serves, nor a file of another kind), and the
/// socket made 0666 (workloads run as other users; attestation decides who gets what).
fn bind_socket(path: &Path) -> Result<UnixListener, AgentError> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io_error(dir))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(AgentError::Serve(format!(
                    "{}: another process is serving on this socket",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(io_error(path))?;
        }
        Ok(_) => {
            return Err(AgentError::Serve(format!(
                "{}: exists and is not a socket; not replacing it",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_error(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(io_error(path))?;
    Ok(listener)
}
