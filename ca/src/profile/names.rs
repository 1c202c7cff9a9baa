//! The SPIFFE IDs and DNS names a CSR asks for, read with the rules of `portcullis-identity`
//! (shared with the gateway and the admin API) and turned into the CA's coded refusals.

use portcullis_identity::SpiffeIdError;
pub(crate) use portcullis_identity::{DnsName, SpiffeId};

use super::{shown, IssueRefusal};

/// A requested URI SAN as a workload SPIFFE ID.
pub(crate) fn requested_spiffe_id(uri: &str) -> Result<SpiffeId, IssueRefusal> {
    uri.parse::<SpiffeId>().map_err(|e| match e {
        SpiffeIdError::WrongScheme => {
            IssueRefusal::SanNotAllowed(format!("URI {:?} (not spiffe://)", shown(uri)))
        }
        why => IssueRefusal::SpiffeIdInvalid {
            id: shown(uri),
            why: why.to_string(),
        },
    })
}

/// A requested DNS SAN (lower-cased), or the wildcard name `*.BASE`.
pub(crate) fn requested_dns_name(raw: &str) -> Result<DnsName, IssueRefusal> {
    raw.parse::<DnsName>().map_err(|e| {
        if e.is_wildcard() {
            IssueRefusal::WildcardNotAllowed {
                name: shown(raw),
                why: e.reason(),
            }
        } else {
            IssueRefusal::DnsNameInvalid {
                name: shown(raw),
                why: e.reason(),
            }
        }
    })
}
