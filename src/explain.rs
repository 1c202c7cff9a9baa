//! `portcullis policy explain`: what the gateway would decide for a described request, and
//! which rule decides it, so an operator can test a change before applying it. It runs the
//! gateway's own admission step (normalise, route, authorise, limits, body plan), so the two
//! cannot disagree; only the limits start empty here, as after a restart.

use std::net::IpAddr;
use std::path::Path;

use std::sync::Arc;

use anyhow::{bail, Context};
use portcullis_gateway::{Admission, Bearer, BodyPlan, HeadSize, RequestHead, Verdict};
use portcullis_policy::{ClaimNames, Config, Identity, RateLimit, SpiffeId, TokenIdentity};

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
    /// A file with the bearer token's claims (a JSON object).
    pub(crate) claims: Option<&'a Path>,
    /// Print one JSON object instead of text.
    pub(crate) json: bool,
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
    let bearer = match req.claims {
        None => Bearer::Absent,
        Some(file) => Bearer::Valid(Arc::new(token_from_claims(&config, file)?)),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (raw_path, query) = req.path.split_once('?').unwrap_or((req.path, ""));
    let head = RequestHead {
        identity: identity.as_ref(),
        method: req.method,
        authority: None,
        host: req.host,
        host_required: false,
        size: HeadSize::default(),
        both_lengths: false,
        path: raw_path,
        source: req.source,
        headers: &headers,
        bearer: &bearer,
        now,
    };
    let verdict = Admission::from_config(&config).decide(&head);
    if req.json {
        println!("{}", as_json(&verdict));
        return Ok(());
    }

    let shown = verdict
        .target
        .as_ref()
        .map_or(raw_path, |t| t.path.as_str());
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    println!("request:  {} {shown}{query}", req.method);
    if shown != raw_path {
        println!("          (normalised from {raw_path})");
    }
    let who = identity
        .as_ref()
        .and_then(|i| i.spiffe_id.as_ref().map(|s| s.to_string()))
        .unwrap_or_else(|| "anonymous".to_owned());
    println!("caller:   {who} from {}", req.source);
    if let Bearer::Valid(token) = &bearer {
        println!(
            "token:    sub {} (provider {}), email {}, groups [{}], amr [{}], acr {}",
            token.subject,
            token.provider,
            token.email.as_deref().unwrap_or("-"),
            token.groups.join(", "),
            token.amr.join(", "),
            token.acr.as_deref().unwrap_or("-"),
        );
    }
    match &verdict.route {
        Some(route) => println!(
            "route:    {} (tenant {}, upstream {}, prefix {})",
            route.id, route.tenant, route.upstream, route.path_prefix
        ),
        None => println!("route:    none"),
    }
    match &verdict.outcome {
        Ok(admitted) => {
            println!("decision: allow (rule {})", admitted.permit.rule);
            println!("body:     request {}", plan_text(&admitted.request_body));
        }
        Err(refusal) => {
            println!("decision: {refusal}");
            println!("status:   {} {}", refusal.status(), refusal.code());
        }
    }
    let tenant = verdict.route.as_ref().and_then(|r| {
        config
            .tenants
            .iter()
            .find(|t| t.id == r.tenant)
            .map(|t| (r, t))
    });
    if let Some((route, tenant)) = tenant {
        let l = &tenant.limits;
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
        println!("          (counted from empty here: the gateway's buckets hold its traffic)");
    }
    Ok(())
}

/// The token identity `file`'s claims describe, read with the claim names of the provider
/// whose issuer they name (else the default names).
fn token_from_claims(config: &Config, file: &Path) -> anyhow::Result<TokenIdentity> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("--claims {}", file.display()))?;
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("--claims {}: not a JSON object", file.display()))?;
    let issuer = claims.get("iss").and_then(|v| v.as_str());
    let provider = config
        .tenants
        .iter()
        .flat_map(|t| &t.identity_providers)
        .find(|p| Some(p.settings.issuer.as_str()) == issuer);
    let names = provider.map_or_else(ClaimNames::default, |p| p.settings.claims.clone());
    let name = provider.map_or("-", |p| p.settings.name.as_str());
    TokenIdentity::from_claims(claims, name, &names)
        .with_context(|| format!("--claims {}: no `sub` claim", file.display()))
}

fn rate(r: &Option<RateLimit>) -> String {
    r.map_or("none".to_owned(), |r| {
        format!("{}/{:?} burst {}", r.requests, r.per, r.burst)
    })
}

fn plan_text(plan: &BodyPlan) -> &'static str {
    match plan {
        BodyPlan::Forward => "body forwarded as sent (not inspected on this route)",
        BodyPlan::Scan(_) => "any body scanned by DLP as it streams",
        BodyPlan::Unscanned(_) => "body forwarded unscanned, as the policy allows (counted)",
    }
}

/// The verdict as one JSON object: what the gateway would answer.
fn as_json(verdict: &Verdict) -> serde_json::Value {
    let route = verdict.route.as_ref().map(|r| r.id.to_string());
    let path = verdict.target.as_ref().map(|t| t.path.to_string());
    match &verdict.outcome {
        Ok(admitted) => serde_json::json!({
            "decision": "allow",
            "route": route,
            "path": path,
            "rule": admitted.permit.rule.as_str(),
            "request_body": format!("{:?}", admitted.request_body),
        }),
        Err(refusal) => serde_json::json!({
            "decision": refusal.label(),
            "route": route,
            "path": path,
            "rule": refusal.rule(),
            "status": refusal.status(),
            "error": refusal.code(),
        }),
    }
}
