//! The SPIFFE Workload API over gRPC (tonic): `FetchX509SVID` and `FetchX509Bundles` stream
//! the caller's SVIDs and trust bundle, a new message at every rotation. The JWT-SVID and
//! WIT-SVID methods answer UNIMPLEMENTED: this agent issues X.509-SVIDs only.
//!
//! Every call must carry the `workload.spiffe.io: true` header (a browser or an SSRF'd HTTP
//! client cannot set it; missing → INVALID_ARGUMENT, as SPIRE answers), and is attested from
//! the connection's peer credentials: a caller no entry matches gets PERMISSION_DENIED and a
//! message that says nothing about the registrations.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use crate::attest::Caller;
use crate::config::WorkloadEntry;
use crate::proto::spiffe_workload_api_server::SpiffeWorkloadApi;
use crate::proto::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse, WitsvidRequest,
    WitsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest,
    X509svidResponse,
};
use crate::svid::{Svid, SvidStore};

/// The header every Workload API call must carry, with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// Messages waiting for a slow reader before the stream's task waits too.
const STREAM_BUFFER: usize = 4;

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// The Workload API service: the registrations and the SVIDs held for them.
pub(crate) struct WorkloadApi {
    pub(crate) workloads: Arc<Vec<WorkloadEntry>>,
    pub(crate) store: Arc<SvidStore>,
    /// Becomes true at shutdown: open streams end.
    pub(crate) stop: watch::Receiver<bool>,
}

impl WorkloadApi {
    /// Checks the header and attests the caller: the entries it matches, at least one.
    fn admit<T>(&self, request: &Request<T>, method: &str) -> Result<Vec<usize>, Status> {
        let header = request.metadata().get(SECURITY_HEADER);
        if header.and_then(|v| v.to_str().ok()) != Some("true") {
            return Err(Status::invalid_argument(
                "security header missing from request",
            ));
        }
        let cred = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred);
        let Some(cred) = cred else {
            tracing::warn!(
                workload_api.method = method,
                "Workload API: caller without peer credentials refused"
            );
            return Err(no_identity());
        };
        let caller = Caller::from_cred(&cred);
        let entries = caller.entries(&self.workloads);
        let path = caller.path.as_ref().map(|p| p.display().to_string());
        if entries.is_empty() {
            tracing::info!(
                workload_api.method = method,
                caller.pid = caller.pid.unwrap_or(0),
                caller.uid = caller.uid,
                caller.gid = caller.gid,
                caller.path = path.as_deref().unwrap_or(""),
                "Workload API: caller matches no registered workload"
            );
            return Err(no_identity());
        }
        tracing::info!(
            workload_api.method = method,
            caller.pid = caller.pid.unwrap_or(0),
            caller.uid = caller.uid,
            caller.gid = caller.gid,
            caller.path = path.as_deref().unwrap_or(""),
            workload.entries = entries.len(),
            "Workload API: caller attested"
        );
        Ok(entries)
    }

    /// A stream that sends `render(svids)` now (once every SVID is issued) and again whenever
    /// it changes, until the client goes away or the agent stops.
    fn watch<T, F>(&self, entries: Vec<usize>, render: F) -> Stream<T>
    where
        T: Clone + PartialEq + Send + 'static,
        F: Fn(&[Arc<Svid>]) -> T + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let store = Arc::clone(&self.store);
        let mut changed = store.subscribe();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let mut last: Option<T> = None;
            loop {
                if let Some(svids) = store.current(&entries) {
                    let message = render(&svids);
                    if last.as_ref() != Some(&message) {
                        if tx.send(Ok(message.clone())).await.is_err() {
                            return;
                        }
                        last = Some(message);
                    }
                }
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

fn unimplemented() -> Status {
    Status::unimplemented("this agent serves X.509-SVIDs only")
}

/// The SVIDs, the first being the caller's default, each with its trust domain's bundle.
fn x509_svid_response(svids: &[Arc<Svid>]) -> X509svidResponse {
    X509svidResponse {
        svids: svids
            .iter()
            .map(|s| X509svid {
                spiffe_id: s.spiffe_id.clone(),
                x509_svid: s.chain_der.clone(),
                x509_svid_key: s.key_der.to_vec(),
                bundle: s.bundle_der.clone(),
                hint: String::new(),
            })
            .collect(),
        crl: Vec::new(),
        federated_bundles: HashMap::new(),
    }
}

/// The trust bundle of every trust domain the caller's SVIDs are in.
fn x509_bundles_response(svids: &[Arc<Svid>]) -> X509BundlesResponse {
    X509BundlesResponse {
        crl: Vec::new(),
        bundles: svids
            .iter()
            .map(|s| (s.trust_domain.clone(), s.bundle_der.clone()))
            .collect(),
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchJWTBundlesStream = Stream<JwtBundlesResponse>;
    type FetchX509SVIDStream = Stream<X509svidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;
    type FetchWITSVIDStream = Stream<WitsvidResponse>;
    type FetchWITBundlesStream = Stream<WitBundlesResponse>;

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        self.admit(&request, "FetchJWTSVID")?;
        Err(unimplemented())
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.admit(&request, "FetchJWTBundles")?;
        Err(unimplemented())
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.admit(&request, "ValidateJWTSVID")?;
        Err(unimplemented())
    }

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let entries = self.admit(&request, "FetchX509SVID")?;
        Ok(Response::new(self.watch(entries, x509_svid_response)))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let entries = self.admit(&request, "FetchX509Bundles")?;
        Ok(Response::new(self.watch(entries, x509_bundles_response)))
    }

    async fn fetch_witsvid(
        &self,
        request: Request<WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        self.admit(&request, "FetchWITSVID")?;
        Err(unimplemented())
    }

    async fn fetch_wit_bundles(
        &self,
        request: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        self.admit(&request, "FetchWITBundles")?;
        Err(unimplemented())
    }
}
