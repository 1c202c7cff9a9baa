//! `portcullis policy explain`: what the gateway would decide for a described request, and
//! which rule decides it, so an operator can test a change before applying it.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context};
use portcullis_policy::{normalize_host, normalize_path, Identity, RequestFacts, SpiffeId};

/// A request described on the command line.
pub(crate) struct Described<'a> {
    pub(crate) identity: Option<&'a str>,
    pub(crate) dns_sans: &'a [String],
    pub(crate) subject: Option<&'a str>,
    pub(crate) method: &'a str,
    pub(crate) host: Option<&'a str>,
    pub(crate) path: &'a str,
    pub(crate) source: IpAddr,
    pub(crate) headers: &'a [String],
}

pub(crate) fn explain(config: &Path, req: &Described<'_>) -> anyhow::Result<()> {
    let config = portcullis_gateway::load_config(config)?;
    let spiffe_id = req
        .identity
        .map(|s| {
            s.parse::<SpiffeId>()
                .with_context(|| format!("--identity `{s}`"))
        })
        .transpose()?;
    let identity =
        (spiffe_id.is_some() || !req.dns_sans.is_empty() || req.subject.is_some()).then(|| {
            Identity::from_x509(
                spiffe_id,
                req.dns_sans
                    .iter()
                    .map(|d| d.to_ascii_lowercase())
                    .collect(),
                req.subject.map(str::to_owned),
            )
        });
    let mut headers = Vec::new();
    for h in req.headers {
        let Some((name, value)) = h.split_once('=') else {
            bail!("--header `{h}`: expected NAME=VALUE");
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let (raw_path, query) = req.path.split_once('?').unwrap_or((req.path, ""));
    let path =
        normalize_path(raw_path).with_context(|| format!("path `{raw_path}` would get 400"))?;
    let host = req.host.and_then(normalize_host);

    println!(
        "request:  {} {}{}{}",
        req.method,
        path,
        if query.is_empty() { "" } else { "?" },
        query
    );
    if path.as_str() != raw_path {
        println!("          (normalised from {raw_path})");
    }
    let who = identity
        .as_ref()
        .and_then(|i| i.spiffe_id.as_ref().map(|s| s.to_string()))
        .unwrap_or_else(|| "anonymous".to_owned());
    println!("caller:   {who} from {}", req.source);
    let Some(route) = config.routes.route(host.as_deref(), &path) else {
        println!("route:    none");
        println!("decision: 404 no route");
        return Ok(());
    };
    println!(
        "route:    {} (tenant {}, upstream {}, prefix {})",
        route.id, route.tenant, route.upstream, route.path_prefix
    );
    let facts = RequestFacts {
        identity: identity.as_ref(),
        method: req.method,
        path: &path,
        source: req.source,
        headers: &headers,
    };
    match route.authorize(&facts) {
        Ok(permit) => println!("decision: allow (rule {})", permit.rule),
        Err(denied) => println!(
            "decision: deny (rule {}: {})",
            denied.rule_label(),
            denied.reason
        ),
    }
    if let Some(t) = config.tenants.iter().find(|t| t.id == route.tenant) {
        let l = &t.limits;
        let rate = |r: &Option<portcullis_policy::RateLimit>| {
            r.map_or("none".to_owned(), |r| {
                format!("{}/{:?} burst {}", r.requests, r.per, r.burst)
            })
        };
        println!(
            "limits:   tenant {}, per identity {}, per source {}, route {}, in flight {}, body {}",
            rate(&l.rate),
            rate(&l.per_identity),
            rate(&l.per_source),
            rate(&route.rate_limit),
            l.max_in_flight
                .map_or("unlimited".to_owned(), |n| n.to_string()),
            l.max_request_body
                .map_or("unlimited".to_owned(), |n| format!("{n} bytes")),
        );
    }
    Ok(())
}
