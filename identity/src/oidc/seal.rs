//! Sealed cookies: AES-256-GCM with keys from a key ring, so that any replica holding the
//! ring can read what another wrote — no shared session store. The first key seals; every
//! key opens (rotation: add a new key first, drop the old one once its cookies have expired).
//! Each sealed value is bound to its purpose (the cookie's name) as associated data, so a
//! value sealed as one cookie cannot be replayed as another.
//!
//! The ring is a text file, one key a line: `ID BASE64-OF-32-BYTES` (`#` starts a comment),
//! e.g. `echo "k1 $(openssl rand -base64 32)" > session-keys`.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The keys that seal and open cookies.
pub struct KeyRing {
    /// (id, key); the first seals.
    keys: Vec<(String, LessSafeKey)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("KeyRing")
            .field("ids", &ids)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Reads a ring file. Its problems are named with their line; key material never is.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the ring's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<(String, LessSafeKey)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line_no = n + 1;
            let (id, key) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("line {line_no}: expected `ID BASE64-KEY`"))?;
            let id_ok = (1..=32).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !id_ok {
                return Err(format!(
                    "line {line_no}: a key id is 1-32 of A-Z a-z 0-9 . _ -"
                ));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(format!("line {line_no}: key id `{id}` is listed twice"));
            }
            let bytes = STANDARD
                .decode(key.trim())
                .map_err(|_| format!("line {line_no}: the key is not base64"))?;
            if bytes.len() != 32 {
                return Err(format!(
                    "line {line_no}: a key is 32 random bytes (base64 of 32 bytes), not {}",
                    bytes.len()
                ));
            }
            let key = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| format!("line {line_no}: unusable key"))?;
            keys.push((id.to_owned(), LessSafeKey::new(key)));
        }
        if keys.is_empty() {
            return Err("the key ring holds no key".to_owned());
        }
        Ok(Self {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// The id of the key that seals.
    pub fn sealing_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Seals `plain` for `purpose`: `base64url(id length, id, nonce, ciphertext and tag)`.
    pub fn seal(&self, purpose: &str, plain: &[u8]) -> Option<String> {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut data = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(purpose.as_bytes()),
            &mut data,
        )
        .ok()?;
        let mut out = Vec::with_capacity(1 + id.len() + NONCE_LEN + data.len());
        out.push(u8::try_from(id.len()).ok()?);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens what [`seal`](Self::seal) made for `purpose` with a key of the ring; `None` for
    /// anything else (tampered, another purpose, a key no longer in the ring, garbage).
    pub fn open(&self, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let (&id_len, rest) = bytes.split_first()?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE_LEN {
            return None;
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, data) = rest.split_at(NONCE_LEN);
        let (_, key) = self.keys.iter().find(|(k, _)| k.as_bytes() == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut data)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2 Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    #[test]
    fn sealed_values_open_with_any_key_of_the_ring_for_their_purpose_only() {
        let old = KeyRing::parse(K1).unwrap();
        let rotated = KeyRing::parse(&format!("# new key first\n{K2}\n{K1}\n")).unwrap();
        assert_eq!(rotated.sealing_key_id(), "k2");
        let sealed = old.seal("session", b"alice").unwrap();
        assert_eq!(
            rotated.open("session", &sealed).as_deref(),
            Some(&b"alice"[..])
        );
        assert_eq!(rotated.open("login", &sealed), None, "another purpose");
        let new = rotated.seal("session", b"bob").unwrap();
        assert_eq!(old.open("session", &new), None, "a key not in the old ring");
        assert_ne!(
            rotated.seal("session", b"bob").unwrap(),
            new,
            "fresh nonces"
        );
    }

    #[test]
    fn tampered_or_garbage_values_do_not_open() {
        let ring = KeyRing::parse(K1).unwrap();
        let sealed = ring.seal("session", b"alice").unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            assert_eq!(
                ring.open("session", &URL_SAFE_NO_PAD.encode(&bytes)),
                None,
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        for garbage in ["", "a", "!!!", "AAAA", &"A".repeat(5000)] {
            assert_eq!(ring.open("session", garbage), None);
        }
    }

    #[test]
    fn ring_files_are_checked_without_showing_keys() {
        for (text, needle) in [
            ("", "holds no key"),
            ("k1", "expected `ID BASE64-KEY`"),
            ("k1 not-base64!", "not base64"),
            ("k1 AAAA", "32 random bytes"),
            (
                "bad/id AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                "key id is",
            ),
        ] {
            let err = KeyRing::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains("AAEC"), "{err}");
        }
        let twice = format!("{K1}\n{K1}");
        assert!(KeyRing::parse(&twice).unwrap_err().contains("listed twice"));
    }
}
