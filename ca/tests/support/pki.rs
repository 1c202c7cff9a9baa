//! Test PKI helpers: CSRs made with rcgen, and the real `openssl` binary.

#![allow(dead_code, unreachable_pub)]

use std::process::Command;

use rcgen::{CertificateParams, KeyPair, SanType, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256};

pub fn csr_with(
    alg: &'static SignatureAlgorithm,
    sans: &[SanType],
    tweak: impl FnOnce(&mut CertificateParams),
) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans.to_vec();
    tweak(&mut params);
    params
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
        .into_bytes()
}

pub fn uri(s: &str) -> SanType {
    SanType::URI(s.to_owned().try_into().unwrap())
}

pub fn dns(s: &str) -> SanType {
    SanType::DnsName(s.to_owned().try_into().unwrap())
}

pub fn csr(sans: &[SanType]) -> Vec<u8> {
    csr_with(&PKCS_ECDSA_P256_SHA256, sans, |_| {})
}

pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
