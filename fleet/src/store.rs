//! The fleet's store behind a trait, and its etcd implementation.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, PutOptions, TlsOptions, Txn, TxnOp,
    WatchFilterType, WatchOptions, WatchResponseStream,
};
use portcullis_identity::FleetSettings;
use tokio::sync::Mutex;

use crate::entry::{parse_entry, revoked_key, revoked_prefix, RevokedEntry};
use crate::FleetError;

/// Time allowed for one request to the store (a watch is not bounded by it). Short: while
/// etcd is away every retry waits this long, and catching up after it returns waits for the
/// retry in progress.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest lease asked for, in seconds (etcd's limit is 9e9).
const MAX_LEASE_TTL: u64 = 8_000_000_000;
/// Operations per transaction (etcd's default limit is 128).
const MAX_TXN_OPS: usize = 100;
/// How long an entry outlives its certificate in etcd (its lease's slack).
const LEASE_SLACK: Duration = Duration::from_secs(24 * 3600);

/// Every revocation in the store at one revision.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<RevokedEntry>,
    /// Entries that did not read (each logged).
    pub malformed: u64,
    /// The store's revision the listing was read at: watch from the next one.
    pub revision: i64,
}

/// One change seen by a watch.
#[derive(Debug)]
#[non_exhaustive]
pub enum Change {
    /// A revocation was written.
    Revoked(RevokedEntry),
    /// Something under the prefix that does not read (the message says why).
    Malformed(String),
}

/// A running watch of the revocations.
#[async_trait]
pub trait Changes: Send {
    /// The next changes, as they happen; an error when the watch ends (connection lost,
    /// compaction past its revision): list again, then watch again.
    async fn next(&mut self) -> Result<Vec<Change>, FleetError>;
}

/// What the fleet keeps in its store: the revocation set.
#[async_trait]
pub trait FleetStore: Send + Sync {
    /// Writes revocations (in transactions of at most 100; writing again what was written is
    /// harmless), each kept until a day after its certificate expires.
    async fn publish(&self, entries: &[RevokedEntry]) -> Result<(), FleetError>;
    /// Every revocation now.
    async fn list(&self) -> Result<Listing, FleetError>;
    /// Revocations written after `revision`.
    async fn watch(&self, revision: i64) -> Result<Box<dyn Changes>, FleetError>;
}

/// The fleet's store on an etcd cluster.
pub struct EtcdStore {
    settings: FleetSettings,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.settings.endpoints)
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A store for `settings`; it connects when first used (and again after a failure). TLS
    /// files are read now, so that a missing one is an error at start.
    pub fn new(settings: FleetSettings) -> Result<Self, FleetError> {
        connect_options(&settings)?;
        Ok(Self {
            settings,
            client: Mutex::new(None),
        })
    }

    /// A connected client: the one kept, or a new one.
    async fn client(&self) -> Result<Client, FleetError> {
        let mut kept = self.client.lock().await;
        if let Some(client) = kept.as_ref() {
            return Ok(client.clone());
        }
        let options = connect_options(&self.settings)?;
        let client = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Client::connect(&self.settings.endpoints, Some(options)),
        )
        .await
        .map_err(|_| FleetError::Store("connect: timed out".into()))??;
        *kept = Some(client.clone());
        Ok(client)
    }

    /// Forgets the client after a failure, so that the next call connects again.
    async fn forget(&self) {
        *self.client.lock().await = None;
    }

    /// Runs one request with the kept client, bounded in time; a failure forgets the client.
    async fn request<T, F>(&self, call: impl FnOnce(Client) -> F) -> Result<T, FleetError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client().await?;
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, call(client)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(FleetError::from(e)),
            Err(_) => Err(FleetError::Store("request timed out".into())),
        };
        if outcome.is_err() {
            self.forget().await;
        }
        outcome
    }
}

fn connect_options(settings: &FleetSettings) -> Result<ConnectOptions, FleetError> {
    // Keep-alive pings find a silently dead connection under a watch within ~10 s (a closed
    // one at once). Not more often: etcd answers pings closer than 5 s apart (its
    // --grpc-keepalive-min-time) with GOAWAY, which would cut every watch.
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(Duration::from_secs(6), Duration::from_secs(3))
        // etcd also refuses pings on a connection without a stream (a publisher between
        // publishes): ping only under a watch.
        .with_keep_alive_while_idle(false);
    if let Some(tls) = &settings.tls {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| FleetError::file(path, format!("fleet.tls: {e}")))
        };
        let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
        if let Some((cert, key)) = &tls.client {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(config);
    }
    Ok(options)
}

#[async_trait]
impl FleetStore for EtcdStore {
    async fn publish(&self, entries: &[RevokedEntry]) -> Result<(), FleetError> {
        let now = SystemTime::now();
        let live: Vec<&RevokedEntry> = entries.iter().filter(|e| !e.expired(now)).collect();
        let Some(last) = live.iter().map(|e| e.expires()).max() else {
            return Ok(());
        };
        let ttl = last
            .duration_since(now)
            .unwrap_or_default()
            .saturating_add(LEASE_SLACK)
            .as_secs();
        // etcd refuses leases longer than 9e9 s: a spool entry must never be unpublishable.
        let ttl = i64::try_from(ttl.min(MAX_LEASE_TTL)).unwrap_or(i64::MAX);
        let lease = self
            .request(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?
            .id();
        // etcd takes at most 128 operations in one transaction (--max-txn-ops): a lineage
        // with more renewals goes in several, each all or none; a retry puts them all again.
        for chunk in live.chunks(MAX_TXN_OPS) {
            let mut ops = Vec::with_capacity(chunk.len());
            for entry in chunk {
                let value = serde_json::to_vec(entry)
                    .map_err(|e| FleetError::Store(format!("encoding an entry: {e}")))?;
                let key = revoked_key(&self.settings.prefix, entry);
                ops.push(TxnOp::put(
                    key,
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                ));
            }
            let txn = Txn::new().and_then(ops);
            self.request(|mut c| async move { c.txn(txn).await })
                .await?;
        }
        Ok(())
    }

    async fn list(&self) -> Result<Listing, FleetError> {
        let prefix = revoked_prefix(&self.settings.prefix);
        let key = prefix.clone();
        let response = self
            .request(|mut c| async move { c.get(key, Some(GetOptions::new().with_prefix())).await })
            .await?;
        let mut listing = Listing {
            revision: response.header().map_or(0, |h| h.revision()),
            ..Listing::default()
        };
        for kv in response.kvs() {
            match parse_entry(&self.settings.prefix, kv.key(), kv.value()) {
                Ok(entry) => listing.entries.push(entry),
                Err(e) => {
                    tracing::warn!(fleet.problem = %e, "fleet: malformed revocation entry ignored");
                    listing.malformed += 1;
                }
            }
        }
        Ok(listing)
    }

    async fn watch(&self, revision: i64) -> Result<Box<dyn Changes>, FleetError> {
        let key = revoked_prefix(&self.settings.prefix);
        // Deletions are not watched: a revocation is dropped only once its certificate has
        // expired, whatever happens to its key.
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision.saturating_add(1))
            .with_filters([WatchFilterType::NoDelete]);
        let stream = self
            .request(|mut c| async move { c.watch(key, Some(options)).await })
            .await?;
        let (sender, responses) = stream.split();
        Ok(Box::new(EtcdChanges {
            _sender: sender,
            responses,
            prefix: self.settings.prefix.clone(),
        }))
    }
}

/// A watch on etcd. The request side is kept: dropping it ends the watch.
struct EtcdChanges {
    _sender: etcd_client::WatchRequestSender,
    responses: WatchResponseStream,
    prefix: String,
}

#[async_trait]
impl Changes for EtcdChanges {
    async fn next(&mut self) -> Result<Vec<Change>, FleetError> {
        loop {
            let response = self
                .responses
                .message()
                .await?
                .ok_or_else(|| FleetError::WatchEnded("the stream ended".into()))?;
            if response.canceled() || response.compact_revision() > 0 {
                return Err(FleetError::WatchEnded(format!(
                    "canceled (compacted at {}): {}",
                    response.compact_revision(),
                    response.cancel_reason()
                )));
            }
            let changes: Vec<Change> = response
                .events()
                .iter()
                .filter_map(|event| event.kv())
                .map(|kv| match parse_entry(&self.prefix, kv.key(), kv.value()) {
                    Ok(entry) => Change::Revoked(entry),
                    Err(e) => Change::Malformed(e),
                })
                .collect();
            if !changes.is_empty() {
                return Ok(changes);
            }
        }
    }
}
