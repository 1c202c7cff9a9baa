//! Writing a record's line: in place, into the writer's batch buffer, hashed once over the
//! bytes written. The members are written here, in the format's order, rather than through
//! serde's flattened map; request events (nearly every record) have a writer of their own,
//! without serde's per-member cost. The serde derives stay the schema: a test holds every
//! kind's line to what serde writes for the same record.

use ring::digest::SHA256;

use super::{RecordKind, RequestEvent, HASH_MEMBER, SCHEMA_VERSION};

/// Encodes a record: returns the line (with its trailing `\n`) and its hash.
#[cfg(test)]
pub(crate) fn encode(
    seq: u64,
    time: &str,
    node: &str,
    kind: &RecordKind,
    prev_hash: &str,
) -> Result<(Vec<u8>, String), serde_json::Error> {
    let mut line = Vec::new();
    let hash = encode_into(&mut line, seq, time, node, kind, prev_hash)?;
    Ok((line, hash))
}

/// Appends a record's line (with its trailing `\n`) to `out` and returns its hash. On an error
/// `out` is left as it was.
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    seq: u64,
    time: &str,
    node: &str,
    kind: &RecordKind,
    prev_hash: &str,
) -> Result<String, serde_json::Error> {
    let start = out.len();
    if let Err(e) = write_body(out, seq, time, node, kind, prev_hash) {
        out.truncate(start);
        return Err(e);
    }
    let digest = ring::digest::digest(&SHA256, &out[start..]);
    let mut hex = [0u8; 64];
    for (pair, b) in hex.chunks_exact_mut(2).zip(digest.as_ref()) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 0xf)];
    }
    // The body ends with the object's closing brace: replace it with the hash member.
    out.pop();
    out.extend_from_slice(HASH_MEMBER);
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\"}\n");
    // Hex digits are ASCII: the check cannot fail.
    Ok(String::from(std::str::from_utf8(&hex).unwrap_or_default()))
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The line without its hash member:
/// `{"v":..,"seq":..,"time":..,"node":..,"kind":..,"event":{..},"prev_hash":..}`.
fn write_body(
    out: &mut Vec<u8>,
    seq: u64,
    time: &str,
    node: &str,
    kind: &RecordKind,
    prev_hash: &str,
) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"v\":");
    write_u64(out, u64::from(SCHEMA_VERSION));
    out.extend_from_slice(b",\"seq\":");
    write_u64(out, seq);
    out.extend_from_slice(b",\"time\":");
    write_str(out, time)?;
    out.extend_from_slice(b",\"node\":");
    write_str(out, node)?;
    out.extend_from_slice(b",\"kind\":\"");
    out.extend_from_slice(kind.name().as_bytes());
    out.extend_from_slice(b"\",\"event\":");
    let event = &mut *out;
    match kind {
        RecordKind::Request(e) => write_request(event, e),
        RecordKind::Ca(e) => serde_json::to_writer(event, e),
        RecordKind::Admin(e) => serde_json::to_writer(event, e),
        RecordKind::ConfigReload(e) => serde_json::to_writer(event, e),
        RecordKind::RefusalsSuppressed(e) => serde_json::to_writer(event, e),
        RecordKind::AbuseSummary(e) => serde_json::to_writer(event, e),
        RecordKind::Truncation(e) => serde_json::to_writer(event, e),
        RecordKind::Retention(e) => serde_json::to_writer(event, e),
        RecordKind::Checkpoint(e) => serde_json::to_writer(event, e),
    }?;
    out.extend_from_slice(b",\"prev_hash\":");
    write_str(out, prev_hash)?;
    out.push(b'}');
    Ok(())
}

/// A request event, as its serde derive writes it: every member in declaration order, the
/// optional ones left out when null.
fn write_request(out: &mut Vec<u8>, e: &RequestEvent) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"request_id\":");
    write_str(out, &e.request_id)?;
    write_name(out, b",\"stage\":", e.stage.as_str());
    write_opt(out, b",\"trace_id\":", &e.trace_id)?;
    write_opt(out, b",\"tenant\":", &e.tenant)?;
    write_opt(out, b",\"route\":", &e.route)?;
    write_opt(out, b",\"identity\":", &e.identity)?;
    if let Some(person) = &e.person {
        out.extend_from_slice(b",\"person\":");
        serde_json::to_writer(&mut *out, person)?;
    }
    out.extend_from_slice(b",\"source\":");
    write_str(out, &e.source)?;
    out.extend_from_slice(b",\"method\":");
    write_str(out, &e.method)?;
    out.extend_from_slice(b",\"host\":");
    write_str(out, &e.host)?;
    out.extend_from_slice(b",\"path\":");
    write_str(out, &e.path)?;
    if let Some(cut) = &e.path_truncated {
        out.extend_from_slice(b",\"path_truncated\":");
        serde_json::to_writer(&mut *out, cut)?;
    }
    out.extend_from_slice(b",\"status\":");
    write_u64(out, u64::from(e.status));
    out.extend_from_slice(b",\"bytes_in\":");
    write_u64(out, e.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    write_u64(out, e.bytes_out);
    out.extend_from_slice(b",\"duration_ms\":");
    write_u64(out, e.duration_ms);
    write_name(out, b",\"decision\":", e.decision.as_str());
    write_opt(out, b",\"rule\":", &e.rule)?;
    write_name(out, b",\"rate_limit\":", e.rate_limit.as_str());
    out.extend_from_slice(b",\"dlp\":");
    if e.dlp.is_empty() {
        out.extend_from_slice(b"[]");
    } else {
        serde_json::to_writer(&mut *out, &e.dlp)?;
    }
    write_opt(out, b",\"tls_version\":", &e.tls_version)?;
    write_opt(out, b",\"upstream\":", &e.upstream)?;
    write_opt(out, b",\"reason\":", &e.reason)?;
    write_opt(out, b",\"direction\":", &e.direction)?;
    write_opt(out, b",\"failover\":", &e.failover)?;
    out.push(b'}');
    Ok(())
}

/// `,"name":"value"` for an enum's serialised name (plain ASCII, nothing to escape).
fn write_name(out: &mut Vec<u8>, member: &[u8], name: &str) {
    out.extend_from_slice(member);
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
}

/// `,"name":"value"` when there is a value; nothing when it is null.
fn write_opt(
    out: &mut Vec<u8>,
    member: &[u8],
    value: &Option<String>,
) -> Result<(), serde_json::Error> {
    if let Some(v) = value {
        out.extend_from_slice(member);
        write_str(out, v)?;
    }
    Ok(())
}

/// A JSON string. Most values need no escape and are copied between quotes; the rest go
/// through serde_json, which escapes exactly these bytes (`"`, `\` and controls). The scan has
/// no early exit so that it is vectorised: values are short.
fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    let escapes = s.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if escapes {
        return serde_json::to_writer(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}
