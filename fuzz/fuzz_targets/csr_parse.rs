//! The CA's CSR reader on untrusted bytes. Three shapes, chosen by the first byte:
//!
//! - raw bytes as DER, and the same bytes wrapped in a `CERTIFICATE REQUEST` PEM block: never
//!   a panic, and both spellings get the same verdict (PEM is only a wrapping);
//! - a correctly self-signed Ed25519 request whose extension request is built from fuzzed
//!   extensions (OIDs from the ones the reader handles, values fuzzed): this reaches the
//!   extension parsing behind the signature check, and the verdict is never "bad signature"
//!   or "key type not allowed".

#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use portcullis_ca::parse_csr_for_fuzzing;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// The reader's size limit (`MAX_CSR_BYTES`).
const MAX_CSR_BYTES: usize = 16 * 1024;

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn pem(der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE REQUEST-----\n");
    out.into_bytes()
}

fn key() -> &'static Ed25519KeyPair {
    static KEY: OnceLock<Ed25519KeyPair> = OnceLock::new();
    KEY.get_or_init(|| Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("a fixed seed"))
}

/// Extension OIDs (DER content): the ones `read_csr` judges, and one it does not know.
const OIDS: &[&[u8]] = &[
    &[0x55, 0x1d, 0x11],                                     // subjectAltName
    &[0x55, 0x1d, 0x25],                                     // extKeyUsage
    &[0x55, 0x1d, 0x0f],                                     // keyUsage
    &[0x55, 0x1d, 0x13],                                     // basicConstraints
    &[0x55, 0x1d, 0x1e],                                     // nameConstraints
    &[0x55, 0x1d, 0x0e],                                     // subjectKeyIdentifier
    &[0x55, 0x1d, 0x23],                                     // authorityKeyIdentifier
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01],       // authorityInfoAccess
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e], // not an extension
];

/// A self-signed Ed25519 PKCS#10 request for `CN=fuzz` whose extension request holds the
/// extensions described by `spec`: repeated [OID index] [critical] [value length] value.
fn signed_request(mut spec: &[u8]) -> Vec<u8> {
    let mut extensions = Vec::new();
    while let [oid, critical, len, rest @ ..] = spec {
        let len = usize::from(*len).min(rest.len());
        let (value, tail) = rest.split_at(len);
        let mut ext = tlv(0x06, OIDS[usize::from(*oid) % OIDS.len()]);
        if critical & 1 == 1 {
            ext.extend(tlv(0x01, &[0xff]));
        }
        ext.extend(tlv(0x04, value));
        extensions.extend(tlv(0x30, &ext));
        spec = tail;
    }
    let ext_request_oid = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
    let mut attribute = tlv(0x06, &ext_request_oid);
    attribute.extend(tlv(0x31, &tlv(0x30, &extensions)));
    let attributes = tlv(0xa0, &tlv(0x30, &attribute));

    let cn = {
        let mut atv = tlv(0x06, &[0x55, 0x04, 0x03]);
        atv.extend(tlv(0x0c, b"fuzz"));
        tlv(0x30, &tlv(0x31, &tlv(0x30, &atv)))
    };
    let ed25519 = tlv(0x30, &tlv(0x06, &[0x2b, 0x65, 0x70]));
    let mut spki = ed25519.clone();
    let mut bits = vec![0];
    bits.extend_from_slice(key().public_key().as_ref());
    spki.extend(tlv(0x03, &bits));
    let spki = tlv(0x30, &spki);

    let mut info = tlv(0x02, &[0]);
    info.extend(cn);
    info.extend(spki);
    info.extend(attributes);
    let info = tlv(0x30, &info);
    let mut sig = vec![0];
    sig.extend_from_slice(key().sign(&info).as_ref());

    let mut csr = info;
    csr.extend(ed25519);
    csr.extend(tlv(0x03, &sig));
    tlv(0x30, &csr)
}

fn verdict(input: &[u8]) -> Result<(), &'static str> {
    parse_csr_for_fuzzing(input).map_err(|e| {
        // Rendering the refusal (what the requester is told) must not panic either.
        let _ = e.to_string();
        e.code()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 4 == 3 {
        let csr = signed_request(rest);
        let got = verdict(&csr);
        assert!(
            !matches!(got, Err("csr_signature_invalid" | "key_type_not_allowed")),
            "{got:?} for a valid Ed25519 request"
        );
        // The same request as PEM: the same verdict.
        assert_eq!(verdict(&pem(&csr)), got);
        return;
    }
    let der = verdict(rest);
    // Bytes that already look like PEM are read as PEM, not DER; skip the comparison then.
    if !rest.trim_ascii_start().starts_with(b"-----BEGIN") {
        let wrapped = pem(rest);
        if wrapped.len() <= MAX_CSR_BYTES {
            assert_eq!(verdict(&wrapped), der, "PEM and DER spellings disagree");
        }
    }
});
