//! `portcullis admin revoke|policies|tokens|webhooks …`: one subcommand per operation of the
//! admin API, each a request and a view of its answer (a table, or the API's JSON with
//! `--json`). What the API refuses is printed as its code and message, with a failure exit.

use std::io::Write;

use http::Method;
use portcullis_ca::TenantId;
use serde_json::{json, Value};

use super::client::{call, print_json, table};
use super::commands::{ApiCall, PendingCommand, PolicyCommand, TokensCommand, WebhookCommand};
use crate::error::AdminError;

/// How an answer is shown as text.
enum View {
    /// The list under this key, in these columns (header, field).
    Rows(&'static str, &'static [(&'static str, &'static str)]),
    /// These fields of the object, one a line.
    Fields(&'static [(&'static str, &'static str)]),
    /// This field's text as it is (a diff).
    Text(&'static str),
    /// No body: this line.
    Done(&'static str),
}

/// One request and how to show its answer.
struct Request {
    method: Method,
    path: String,
    body: Option<Value>,
    view: View,
}

const VERSION_COLUMNS: &[(&str, &str)] = &[
    ("VERSION", "version"),
    ("ACTIVE", "active"),
    ("AUTHOR", "author"),
    ("CREATED", "created_at"),
    ("COMMENT", "comment"),
];
const APPROVAL_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("VERSION", "version"),
    ("STATUS", "status"),
    ("REQUESTER", "requester"),
    ("REASON", "reason"),
    ("EXPIRES", "expires_at"),
    ("DECIDED BY", "decided_by"),
];
const APPROVAL_FIELDS: &[(&str, &str)] = &[
    ("approval", "id"),
    ("version", "version"),
    ("status", "status"),
    ("requester", "requester"),
    ("decided by", "decided_by"),
];
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("action", "action"),
    ("version", "version"),
    ("actor", "actor"),
    ("at", "at"),
    ("reason", "reason"),
];

/// A path segment as sent (ids are the caller's text).
fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn policy_request(cmd: &PolicyCommand) -> Result<Request, AdminError> {
    let base = |t: &TenantId| format!("/v1/tenants/{t}");
    Ok(match cmd {
        PolicyCommand::Upload {
            tenant,
            file,
            comment,
            ..
        } => {
            let document = std::fs::read_to_string(file).map_err(|source| AdminError::Io {
                path: file.display().to_string(),
                source,
            })?;
            Request {
                method: Method::POST,
                path: format!("{}/policies", base(tenant)),
                body: Some(json!({ "document": document, "comment": comment })),
                view: View::Fields(&[("uploaded version", "version")]),
            }
        }
        PolicyCommand::List { tenant, .. } => Request {
            method: Method::GET,
            path: format!("{}/policies", base(tenant)),
            body: None,
            view: View::Rows("versions", VERSION_COLUMNS),
        },
        PolicyCommand::Diff {
            tenant,
            version,
            against,
            ..
        } => Request {
            method: Method::GET,
            path: format!(
                "{}/policies/{version}/diff{}",
                base(tenant),
                against.map(|a| format!("?against={a}")).unwrap_or_default()
            ),
            body: None,
            view: View::Text("diff"),
        },
        PolicyCommand::Impact {
            tenant,
            version,
            window,
            ..
        } => Request {
            method: Method::GET,
            path: format!(
                "{}/policies/{version}/impact{}",
                base(tenant),
                window
                    .as_deref()
                    .map(|w| format!("?window={}", segment(w)))
                    .unwrap_or_default()
            ),
            body: None,
            view: View::Fields(&[
                ("since", "since"),
                ("until", "until"),
                ("requests", "requests"),
                ("unchanged", "unchanged"),
                ("allowed -> denied", "allowed_to_denied"),
                ("denied -> allowed", "denied_to_allowed"),
                ("rule changed", "rule_changed"),
            ]),
        },
        PolicyCommand::Activate {
            tenant,
            version,
            reason,
            ..
        } => Request {
            method: Method::POST,
            path: format!("{}/policies/{version}/activate", base(tenant)),
            body: Some(json!({ "reason": reason })),
            view: View::Fields(&[("status", "status")]),
        },
        PolicyCommand::Approvals { tenant, .. } => Request {
            method: Method::GET,
            path: format!("{}/approvals", base(tenant)),
            body: None,
            view: View::Rows("approvals", APPROVAL_COLUMNS),
        },
        PolicyCommand::Approve { tenant, id, .. } => Request {
            method: Method::POST,
            path: format!("{}/approvals/{id}/approve", base(tenant)),
            body: None,
            view: View::Fields(APPROVAL_FIELDS),
        },
        PolicyCommand::Reject { tenant, id, .. } => Request {
            method: Method::POST,
            path: format!("{}/approvals/{id}/reject", base(tenant)),
            body: None,
            view: View::Fields(APPROVAL_FIELDS),
        },
        PolicyCommand::Rollback {
            tenant,
            reason,
            to_version,
            ..
        } => Request {
            method: Method::POST,
            path: format!("{}/policies/rollback", base(tenant)),
            body: Some(json!({ "reason": reason, "to_version": to_version })),
            view: View::Fields(EVENT_FIELDS),
        },
        PolicyCommand::History { tenant, .. } => Request {
            method: Method::GET,
            path: format!("{}/policies/history", base(tenant)),
            body: None,
            view: View::Rows(
                "history",
                &[
                    ("AT", "at"),
                    ("ACTION", "action"),
                    ("VERSION", "version"),
                    ("ACTOR", "actor"),
                    ("REASON", "reason"),
                    ("APPROVAL", "approval"),
                ],
            ),
        },
    })
}

fn token_request(cmd: &TokensCommand) -> Request {
    match cmd {
        TokensCommand::Create {
            tenant,
            spiffe_id,
            ttl,
            ..
        } => Request {
            method: Method::POST,
            path: format!("/v1/tenants/{tenant}/tokens"),
            body: Some(json!({ "spiffe_id": spiffe_id, "ttl": ttl })),
            view: View::Fields(&[
                ("token", "token"),
                ("id", "id"),
                ("spiffe id", "spiffe_id"),
                ("expires", "expires_at"),
            ]),
        },
        TokensCommand::List { tenant, .. } => Request {
            method: Method::GET,
            path: format!("/v1/tenants/{tenant}/tokens"),
            body: None,
            view: View::Rows(
                "tokens",
                &[
                    ("ID", "id"),
                    ("STATUS", "status"),
                    ("SPIFFE ID", "spiffe_id"),
                    ("CREATED", "created_at"),
                    ("EXPIRES", "expires_at"),
                ],
            ),
        },
        TokensCommand::Revoke { tenant, id, .. } => Request {
            method: Method::DELETE,
            path: format!("/v1/tenants/{tenant}/tokens/{}", segment(id)),
            body: None,
            view: View::Done("token revoked"),
        },
    }
}

fn pending_request(cmd: &PendingCommand) -> Request {
    let base = |t: &TenantId| format!("/v1/tenants/{t}/certificates/pending");
    match cmd {
        PendingCommand::List { tenant, .. } => Request {
            method: Method::GET,
            path: base(tenant),
            body: None,
            view: View::Rows(
                "pending",
                &[
                    ("ID", "id"),
                    ("STATE", "state"),
                    ("PROFILE", "profile"),
                    ("SPIFFE ID", "spiffe_id"),
                    ("REQUESTED BY", "requested_by"),
                    ("EXPIRES", "expires_at"),
                    ("DECIDED BY", "decided_by"),
                    ("REASON", "reason"),
                ],
            ),
        },
        PendingCommand::Approve { tenant, id, .. } => Request {
            method: Method::POST,
            path: format!("{}/{}/approve", base(tenant), segment(id)),
            body: None,
            view: View::Fields(&[
                ("issued serial", "serial"),
                ("spiffe id", "spiffe_id"),
                ("not after", "not_after"),
            ]),
        },
        PendingCommand::Reject {
            tenant, id, reason, ..
        } => Request {
            method: Method::POST,
            path: format!("{}/{}/reject", base(tenant), segment(id)),
            body: Some(json!({ "reason": reason })),
            view: View::Fields(&[("request", "id"), ("state", "state"), ("reason", "reason")]),
        },
    }
}

pub(crate) fn pending(cmd: &PendingCommand, out: &mut dyn Write) -> Result<(), AdminError> {
    let call_ = match cmd {
        PendingCommand::List { call, .. }
        | PendingCommand::Approve { call, .. }
        | PendingCommand::Reject { call, .. } => call,
    };
    run(call_, pending_request(cmd), out)
}

fn webhook_request(cmd: &WebhookCommand) -> Request {
    let base = |t: &TenantId| format!("/v1/tenants/{t}/webhooks");
    match cmd {
        WebhookCommand::Create {
            tenant,
            url,
            events,
            description,
            ..
        } => Request {
            method: Method::POST,
            path: base(tenant),
            body: Some(json!({ "url": url, "events": events, "description": description })),
            view: View::Fields(&[
                ("id", "id"),
                ("url", "url"),
                ("events", "events"),
                ("secret", "secret"),
            ]),
        },
        WebhookCommand::List { tenant, .. } => Request {
            method: Method::GET,
            path: base(tenant),
            body: None,
            view: View::Rows(
                "webhooks",
                &[
                    ("ID", "id"),
                    ("URL", "url"),
                    ("EVENTS", "events"),
                    ("CREATED BY", "created_by"),
                    ("DESCRIPTION", "description"),
                ],
            ),
        },
        WebhookCommand::Delete { tenant, id, .. } => Request {
            method: Method::DELETE,
            path: format!("{}/{}", base(tenant), segment(id)),
            body: None,
            view: View::Done("webhook deleted"),
        },
        WebhookCommand::Deliveries {
            tenant,
            status,
            limit,
            ..
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(s) = status {
                query.append_pair("status", s);
            }
            if let Some(l) = limit {
                query.append_pair("limit", &l.to_string());
            }
            Request {
                method: Method::GET,
                path: format!("{}/deliveries?{}", base(tenant), query.finish()),
                body: None,
                view: View::Rows(
                    "deliveries",
                    &[
                        ("ID", "id"),
                        ("EVENT", "event_type"),
                        ("STATUS", "status"),
                        ("ATTEMPTS", "attempts"),
                        ("CREATED", "created_at"),
                        ("LAST ERROR", "last_error"),
                    ],
                ),
            }
        }
        WebhookCommand::Retry { tenant, id, .. } => Request {
            method: Method::POST,
            path: format!("{}/deliveries/{}/retry", base(tenant), segment(id)),
            body: None,
            view: View::Done("delivery queued again"),
        },
    }
}

/// `admin revoke SERIAL`.
pub(crate) fn revoke(
    call_: &ApiCall,
    serial: &str,
    reason: Option<&str>,
    only_this: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    run(
        call_,
        Request {
            method: Method::POST,
            path: format!("/v1/certificates/{}/revoke", segment(serial)),
            body: Some(json!({ "reason": reason, "only_this": only_this })),
            view: View::Fields(&[
                ("serial", "serial"),
                ("status", "status"),
                ("revoked", "revoked"),
            ]),
        },
        out,
    )
}

pub(crate) fn policies(cmd: &PolicyCommand, out: &mut dyn Write) -> Result<(), AdminError> {
    let call_ = match cmd {
        PolicyCommand::Upload { call, .. }
        | PolicyCommand::List { call, .. }
        | PolicyCommand::Diff { call, .. }
        | PolicyCommand::Impact { call, .. }
        | PolicyCommand::Activate { call, .. }
        | PolicyCommand::Approvals { call, .. }
        | PolicyCommand::Approve { call, .. }
        | PolicyCommand::Reject { call, .. }
        | PolicyCommand::Rollback { call, .. }
        | PolicyCommand::History { call, .. } => call,
    };
    run(call_, policy_request(cmd)?, out)
}

pub(crate) fn tokens(cmd: &TokensCommand, out: &mut dyn Write) -> Result<(), AdminError> {
    let call_ = match cmd {
        TokensCommand::Create { call, .. }
        | TokensCommand::List { call, .. }
        | TokensCommand::Revoke { call, .. } => call,
    };
    run(call_, token_request(cmd), out)
}

pub(crate) fn webhooks(cmd: &WebhookCommand, out: &mut dyn Write) -> Result<(), AdminError> {
    let call_ = match cmd {
        WebhookCommand::Create { call, .. }
        | WebhookCommand::List { call, .. }
        | WebhookCommand::Delete { call, .. }
        | WebhookCommand::Deliveries { call, .. }
        | WebhookCommand::Retry { call, .. } => call,
    };
    run(call_, webhook_request(cmd), out)
}

fn run(api: &ApiCall, request: Request, out: &mut dyn Write) -> Result<(), AdminError> {
    let (_, body) = call(
        &api.api,
        request.method,
        &request.path,
        request.body.as_ref(),
    )?;
    if body.is_empty() {
        if let View::Done(line) = request.view {
            return write_out(out, &format!("{line}\n"));
        }
        return Ok(());
    }
    if api.json {
        return print_json(&body, out);
    }
    let answer: Value = serde_json::from_slice(&body)
        .map_err(|_| AdminError::Invalid("the admin API answered without JSON".to_owned()))?;
    let text = match request.view {
        View::Rows(list, columns) => {
            let mut rows = vec![columns.iter().map(|(h, _)| (*h).to_owned()).collect()];
            for item in answer[list].as_array().into_iter().flatten() {
                rows.push(columns.iter().map(|(_, f)| cell(&item[*f])).collect());
            }
            table(&rows)
        }
        View::Fields(fields) => {
            // An activation's event or approval request shows its fields too.
            let nested = answer["event"]
                .as_object()
                .or_else(|| answer["approval"].as_object());
            let mut rows: Vec<Vec<String>> = fields
                .iter()
                .map(|(label, f)| vec![format!("{label}:"), cell(&answer[*f])])
                .collect();
            for (k, v) in nested.into_iter().flatten() {
                rows.push(vec![format!("{k}:"), cell(v)]);
            }
            table(&rows)
        }
        View::Text(field) => answer[field].as_str().unwrap_or_default().to_owned(),
        View::Done(line) => format!("{line}\n"),
    };
    write_out(out, &text)
}

/// A JSON value as a table cell: text as it is, lists joined, nothing as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

pub(super) fn write_out(out: &mut dyn Write, text: &str) -> Result<(), AdminError> {
    out.write_all(text.as_bytes())
        .map_err(|source| AdminError::Io {
            path: "standard output".to_owned(),
            source,
        })
}
