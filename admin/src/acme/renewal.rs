//! ACME Renewal Information (RFC 9773): GET `/acme/renewal-info/{certID}` suggests when to
//! renew a certificate this server issued through ACME (the last third of its lifetime, or at
//! once when it is revoked), and a new order may say which certificate it `replaces`.
//!
//! A certID is `base64url(AKI keyIdentifier) "." base64url(serial's DER value bytes)`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use portcullis_ca::Serial;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::flow::{blocking_store, respond, rfc3339};
use super::jws::{b64, unb64};
use super::Problem;
use crate::api::{blocking, AppState};

/// Longest certID read (a 20-byte key id and serial take 56 characters).
const MAX_CERT_ID: usize = 256;
/// How long a client should wait before asking again, at most.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(6 * 3600);
/// ... and at least.
const RETRY_AFTER_MIN: Duration = Duration::from_secs(60);

/// A certificate named by its issuer's key identifier and its serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertId {
    key_id: Vec<u8>,
    pub(crate) serial: Serial,
}

impl CertId {
    /// Parses a certID; any other text is `malformed`.
    pub(crate) fn parse(text: &str) -> Result<Self, Problem> {
        let bad =
            || Problem::malformed("the certID is not base64url(keyIdentifier).base64url(serial)");
        if text.len() > MAX_CERT_ID {
            return Err(bad());
        }
        let (key_id, serial) = text.split_once('.').ok_or_else(bad)?;
        let key_id = unb64(key_id, "the certID's key identifier").map_err(|_| bad())?;
        let serial = unb64(serial, "the certID's serial").map_err(|_| bad())?;
        if key_id.is_empty() || serial.is_empty() || serial.iter().all(|b| *b == 0) {
            return Err(bad());
        }
        Ok(Self {
            key_id,
            serial: Serial::from_be_bytes(&serial),
        })
    }

    /// The certID in its canonical form (the serial as DER writes it: a leading zero byte
    /// when its top bit is set).
    pub(crate) fn text(&self) -> String {
        let mut serial = self.serial.as_bytes().to_vec();
        if serial.first().is_some_and(|b| b & 0x80 != 0) {
            serial.insert(0, 0);
        }
        format!("{}.{}", b64(&self.key_id), b64(&serial))
    }
}

/// What the stored chain's leaf says: its issuer's key identifier and its DNS names.
struct Leaf {
    key_id: Option<Vec<u8>>,
    dns_names: BTreeSet<String>,
}

fn leaf_of(chain_pem: &str) -> Option<Leaf> {
    let der = portcullis_identity::parse_certs(chain_pem.as_bytes(), "stored chain")
        .ok()?
        .into_iter()
        .next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let mut leaf = Leaf {
        key_id: None,
        dns_names: BTreeSet::new(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                leaf.key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::DNSName(n) = name {
                        leaf.dns_names.insert(n.to_ascii_lowercase());
                    }
                }
            }
            _ => {}
        }
    }
    Some(leaf)
}

/// The certificate `id` names among those issued through ACME: (account, DNS names); None
/// when unknown or issued under another key.
async fn find(st: &AppState, id: &CertId) -> Result<Option<(i64, BTreeSet<String>)>, Problem> {
    let serial = id.serial.clone();
    let Some((account, chain)) =
        blocking_store(st, move |s| s.backend().certificate(&serial)).await?
    else {
        return Ok(None);
    };
    let Some(leaf) = leaf_of(&chain) else {
        tracing::error!(acme.serial = %id.serial, "acme: stored certificate unreadable");
        return Err(Problem::server_internal());
    };
    Ok((leaf.key_id.as_deref() == Some(id.key_id.as_slice())).then_some((account, leaf.dns_names)))
}

/// The suggested renewal window: the last third of the lifetime, from 2/3 to 5/6 of it; for
/// a revoked certificate, the hour before `now` less a minute (renew at once).
pub(super) fn suggested_window(
    not_before: SystemTime,
    not_after: SystemTime,
    revoked: bool,
    now: SystemTime,
) -> (SystemTime, SystemTime) {
    if revoked {
        let end = now - Duration::from_secs(60);
        return (end - Duration::from_secs(3600), end);
    }
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    (not_before + lifetime * 2 / 3, not_before + lifetime * 5 / 6)
}

/// Ask again in six hours, but not after the window's next edge and not within a minute.
pub(super) fn retry_after(window: (SystemTime, SystemTime), now: SystemTime) -> Duration {
    let next_edge = [window.0, window.1]
        .into_iter()
        .find_map(|edge| edge.duration_since(now).ok().filter(|d| !d.is_zero()));
    next_edge
        .map_or(RETRY_AFTER_MAX, |d| d.min(RETRY_AFTER_MAX))
        .max(RETRY_AFTER_MIN)
}

/// GET `/acme/renewal-info/{certID}` (not signed: anyone holding the certificate may ask).
pub(super) async fn renewal_info(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let base = super::base_url(&headers, &uri).ok();
    let result = async {
        super::flow::acme(&st)?;
        let id = CertId::parse(&id)?;
        if find(&st, &id).await?.is_none() {
            return Err(Problem::not_found());
        }
        let ca = Arc::clone(&st.ca);
        let serial = id.serial.clone();
        let record = blocking(move || ca.inventory().get(&serial, SystemTime::now()))
            .await
            .map_err(|_| Problem::server_internal())?
            .map_err(|e| {
                tracing::warn!(error = %e, "acme: inventory lookup failed");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "serverInternal",
                    "the inventory could not be read now; retry later",
                )
            })?
            .ok_or_else(Problem::not_found)?;
        let now = SystemTime::now();
        let window = suggested_window(
            record.not_before,
            record.not_after,
            record.revoked_at.is_some(),
            now,
        );
        let body = serde_json::json!({
            "suggestedWindow": { "start": rfc3339(window.0), "end": rfc3339(window.1) },
        });
        let mut r = (StatusCode::OK, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&retry_after(window, now).as_secs().to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        Ok(r)
    }
    .await;
    respond(&st, base.as_deref(), result).await
}

/// Checks a new order's `replaces` (RFC 9773 §5): a certificate issued through ACME to this
/// same account, sharing a name with the order.
pub(super) async fn check_replaces(
    st: &AppState,
    account: i64,
    text: &str,
    names: &[String],
) -> Result<CertId, Problem> {
    let id = CertId::parse(text)?;
    let Some((holder, dns_names)) = find(st, &id).await? else {
        return Err(Problem::malformed(
            "replaces names no certificate this server issued",
        ));
    };
    if holder != account {
        return Err(Problem::unauthorized(
            "replaces names a certificate of another account",
        ));
    }
    if !names.iter().any(|n| dns_names.contains(n)) {
        return Err(Problem::malformed(
            "the order shares no identifier with the certificate it replaces",
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_ids_parse_strictly() {
        let id = CertId::parse("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").unwrap();
        assert_eq!(id.serial.as_bytes(), [0x87, 0x65, 0x43, 0x21]);
        assert_eq!(id.text(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
        for bad in [
            "",
            ".",
            "abc",
            "aYhb.",
            ".AIdlQyE",
            "aYhb.AA",
            "a+b.AIdlQyE",
            "aYhb.AIdlQyE=",
            "a.b.c",
        ] {
            assert_eq!(CertId::parse(bad).unwrap_err().kind, "malformed", "{bad}");
        }
        assert!(CertId::parse(&"A".repeat(300)).is_err());
    }

    #[test]
    fn the_window_is_the_last_third_or_the_past_when_revoked() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(6000);
        let (start, end) = suggested_window(nb, na, false, nb);
        assert_eq!(start, nb + Duration::from_secs(4000));
        assert_eq!(end, nb + Duration::from_secs(5000));
        let now = nb + Duration::from_secs(10);
        assert_eq!(retry_after((start, end), now), Duration::from_secs(3990));
        let inside = nb + Duration::from_secs(4500);
        assert_eq!(retry_after((start, end), inside), Duration::from_secs(500));
        let after = nb + Duration::from_secs(5999);
        assert_eq!(retry_after((start, end), after), RETRY_AFTER_MAX);
        let long = (
            now + Duration::from_secs(86400 * 30),
            now + Duration::from_secs(86400 * 40),
        );
        assert_eq!(retry_after(long, now), RETRY_AFTER_MAX);
        let (start, end) = suggested_window(nb, na, true, now);
        assert!(start < end && end < now);
    }
}
