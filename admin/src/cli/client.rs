//! `portcullis admin report …`, `certificates …` and the API's operations (`calls.rs`): a
//! thin client of the admin API. It authenticates like any caller (a client certificate, or a person's bearer
//! token read from a file), asks the endpoint and prints the answer as an aligned table, or
//! as the API's own CSV or JSON. Refusals print the API's code and message.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use portcullis_ca::TenantId;
use portcullis_identity::{load_certs, load_private_key, root_store, ClientCredentials};

use super::calls::write_out;
use crate::error::AdminError;

/// Longest answer read (a report or listing of many certificates).
const MAX_ANSWER: usize = 32 << 20;

/// Where the admin API is and who calls it.
#[derive(Debug, Clone, Args)]
pub struct ApiConnection {
    /// The admin API: `https://HOST[:PORT]`.
    #[arg(long)]
    pub server: String,
    /// CA certificates (PEM) the admin API's certificate chains to.
    #[arg(long)]
    pub ca: PathBuf,
    /// Client certificate (PEM), for a caller with a certificate.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// A file holding a person's bearer token from a configured identity provider (read from
    /// a file so that it stays out of the process list and shell history).
    #[arg(long, conflicts_with = "cert")]
    pub token_file: Option<PathBuf>,
}

/// The reports of `/v1/tenants/T/reports/KIND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportKind {
    /// Who may reach which routes, rule by rule.
    Access,
    /// The tenant's certificate inventory.
    Certificates,
    /// The policy change history.
    Changes,
    /// Requests, denials, DLP matches and refusals over a window.
    Audit,
}

/// How an answer is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns (reports: the stamp first).
    Table,
    /// The API's CSV.
    Csv,
    /// The API's JSON, indented.
    Json,
}

impl ReportKind {
    fn as_str(self) -> &'static str {
        match self {
            ReportKind::Access => "access",
            ReportKind::Certificates => "certificates",
            ReportKind::Changes => "changes",
            ReportKind::Audit => "audit",
        }
    }
}

/// Prints one report.
pub(crate) fn report(
    conn: &ApiConnection,
    kind: ReportKind,
    tenant: &TenantId,
    window: Option<&str>,
    within: Option<&str>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let wire = if format == Format::Json {
        "json"
    } else {
        "csv"
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("format", wire);
    if let Some(w) = window {
        query.append_pair("window", w);
    }
    if let Some(w) = within {
        query.append_pair("within", w);
    }
    let path = format!(
        "/v1/tenants/{tenant}/reports/{}?{}",
        kind.as_str(),
        query.finish()
    );
    let (headers, body) = get(conn, &path)?;
    match format {
        Format::Json => print_json(&body, out),
        Format::Csv => write_out(out, &String::from_utf8_lossy(&body)),
        Format::Table => {
            let stamp = |name: &str| {
                headers
                    .get(format!("x-portcullis-report-{name}"))
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .unwrap_or("none")
                    .to_owned()
            };
            write_out(
                out,
                &format!(
                    "# {} report of {tenant}; computed at {}, policy serial {}, audit heads {}\n",
                    kind.as_str(),
                    stamp("computed-at"),
                    stamp("policy-serial"),
                    stamp("audit-heads")
                ),
            )?;
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(body.as_ref());
            let rows = reader
                .records()
                .map(|r| r.map(|r| r.iter().map(str::to_owned).collect()))
                .collect::<Result<Vec<Vec<String>>, _>>()
                .map_err(|e| AdminError::Invalid(format!("the report's CSV is unreadable: {e}")))?;
            write_out(out, &table(&rows))
        }
    }
}

/// What `admin certificates` lists.
#[derive(Debug, Clone, Default)]
pub(crate) struct CertificateQuery {
    pub(crate) tenant: Option<TenantId>,
    pub(crate) identity: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) expires_within: Option<String>,
    pub(crate) lineage: Option<String>,
}

/// Prints certificates of the inventory, or one certificate's lineage.
pub(crate) fn certificates(
    conn: &ApiConnection,
    q: &CertificateQuery,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let path = match &q.lineage {
        Some(serial) => format!(
            "/v1/certificates/{}/lineage",
            form_urlencoded::byte_serialize(serial.as_bytes()).collect::<String>()
        ),
        None => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (name, value) in [
                ("tenant", q.tenant.as_ref().map(ToString::to_string)),
                ("identity", q.identity.clone()),
                ("status", q.status.clone()),
                ("expires_within", q.expires_within.clone()),
            ] {
                if let Some(v) = value {
                    query.append_pair(name, &v);
                }
            }
            format!("/v1/certificates?{}", query.finish())
        }
    };
    let (_, body) = get(conn, &path)?;
    if json {
        return print_json(&body, out);
    }
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| AdminError::Invalid("the admin API answered without JSON".to_owned()))?;
    let mut rows = vec![vec![
        "SERIAL".to_owned(),
        "TENANT".to_owned(),
        "IDENTITY".to_owned(),
        "STATUS".to_owned(),
        "NOT AFTER".to_owned(),
        "RENEWS".to_owned(),
    ]];
    let field = |c: &serde_json::Value, name: &str| c[name].as_str().unwrap_or("-").to_owned();
    for c in answer["certificates"].as_array().into_iter().flatten() {
        let identity = c["sans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .find_map(|s| s.strip_prefix("URI:"))
            .map_or_else(|| field(c, "subject"), str::to_owned);
        rows.push(vec![
            field(c, "serial"),
            field(c, "tenant"),
            identity,
            field(c, "status"),
            field(c, "not_after"),
            field(c, "renewed_from"),
        ]);
    }
    write_out(out, &table(&rows))
}

pub(super) fn print_json(body: &[u8], out: &mut dyn Write) -> Result<(), AdminError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| AdminError::Invalid("the admin API answered without JSON".to_owned()))?;
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    write_out(out, &format!("{text}\n"))
}

/// `GET path`: the headers and body of a 2xx answer; otherwise the API's code and message as
/// the error.
fn get(conn: &ApiConnection, path: &str) -> Result<(http::HeaderMap, bytes::Bytes), AdminError> {
    call(conn, http::Method::GET, path, None)
}

/// `method path` with a JSON `body`: the headers and body of a 2xx answer; otherwise the API's
/// code and message as the error.
pub(super) fn call(
    conn: &ApiConnection,
    method: http::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(http::HeaderMap, bytes::Bytes), AdminError> {
    let invalid = |m: String| AdminError::Invalid(m);
    let uri: http::Uri = conn
        .server
        .parse()
        .map_err(|_| invalid(format!("--server {:?}: not a URL", conn.server)))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid("--server: an https:// URL".to_owned()));
    }
    let host = uri
        .host()
        .ok_or_else(|| invalid("--server: no host".to_owned()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let roots = load_certs(&conn.ca)
        .and_then(|certs| root_store(certs, "--ca"))
        .map_err(|e| invalid(format!("--ca {}: {e}", conn.ca.display())))?;
    let credentials = match (&conn.cert, &conn.key) {
        (Some(cert), Some(key)) => Some(ClientCredentials {
            chain: load_certs(cert).map_err(|e| invalid(format!("--cert: {e}")))?,
            key: load_private_key(key).map_err(|e| invalid(format!("--key: {e}")))?,
        }),
        _ => None,
    };
    let mut headers = Vec::new();
    let body = match body {
        Some(json) => {
            headers.push((http::header::CONTENT_TYPE, "application/json".to_owned()));
            bytes::Bytes::from(json.to_string())
        }
        None => bytes::Bytes::new(),
    };
    if let Some(file) = &conn.token_file {
        let token = std::fs::read_to_string(file)
            .map_err(|e| invalid(format!("--token-file {}: {e}", file.display())))?;
        headers.push((
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()),
        ));
    }
    let client = portcullis_identity::IssuanceClient::new(&host, port, roots, credentials)
        .map_err(|e| invalid(e.to_string()))?
        .with_timeout(Duration::from_secs(60))
        .with_max_answer(MAX_ANSWER);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| invalid(format!("starting the async runtime: {e}")))?;
    let (status, headers, body) = runtime
        .block_on(client.request(method, path, &headers, body))
        .map_err(|e| invalid(e.to_string()))?;
    if status.is_success() {
        return Ok((headers, body));
    }
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    Err(invalid(format!(
        "the admin API answered {} {}: {}",
        status.as_u16(),
        answer["error"].as_str().unwrap_or("-"),
        answer["message"].as_str().unwrap_or("(no message)")
    )))
}

/// `rows` in columns two spaces apart, each as wide as its widest cell.
pub(super) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let rows = vec![
            vec!["SERIAL".to_owned(), "TENANT".to_owned(), "X".to_owned()],
            vec!["0a".to_owned(), "acme-corp".to_owned(), "é".to_owned()],
        ];
        assert_eq!(table(&rows), "SERIAL  TENANT     X\n0a      acme-corp  é\n");
        assert_eq!(table(&[]), "");
    }
}
