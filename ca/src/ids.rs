//! Names of the CA's things: certificate serials and tenants.

use std::fmt;
use std::str::FromStr;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::CaError;

/// A certificate serial number: a positive integer as minimal big-endian bytes (no leading
/// zeros), shown as lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// 128 random bits. Encoded as a positive DER INTEGER (with a 0x00 pad when the top bit is
    /// set), so at most 17 content octets, under RFC 5280's limit of 20.
    pub fn random() -> Result<Self, CaError> {
        let rng = SystemRandom::new();
        loop {
            let mut bytes = [0u8; 16];
            rng.fill(&mut bytes).map_err(|_| CaError::Random)?;
            let serial = Self::from_be_bytes(&bytes);
            if !serial.0.is_empty() {
                return Ok(serial);
            }
        }
    }

    /// From big-endian bytes (leading zeros ignored).
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        Self(bytes[first..].to_vec())
    }

    /// Minimal big-endian bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The serial's size in bits.
    pub fn bits(&self) -> usize {
        match self.0.first() {
            None => 0,
            Some(top) => self.0.len() * 8 - top.leading_zeros() as usize,
        }
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("00");
        }
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Serial {
    type Err = CaError;

    /// Hex, case-insensitive, with optional `0x` and `:` separators (as `openssl` prints).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CaError::InvalidSerial(s.chars().take(80).collect());
        let trimmed = s.trim();
        let trimmed = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        let mut digits: String = trimmed.chars().filter(|c| *c != ':').collect();
        if digits.is_empty() || digits.len() > 40 {
            return Err(bad());
        }
        if digits.len() % 2 == 1 {
            digits.insert(0, '0');
        }
        let bytes = hex::decode(&digits).map_err(|_| bad())?;
        let serial = Self::from_be_bytes(&bytes);
        if serial.0.is_empty() {
            return Err(bad());
        }
        Ok(serial)
    }
}

impl Serialize for Serial {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A tenant's id: 1-63 characters of lower-case letters, digits and `-`, starting with a letter
/// or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TenantId(String);

impl TenantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(CaError::Config(format!(
                "tenant id {:?}: use 1-63 characters of a-z 0-9 -, not starting with '-'",
                s.chars().take(80).collect::<String>()
            )))
        }
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_round_trips_and_normalises() {
        let s: Serial = "00:1A:2b".parse().unwrap();
        assert_eq!(s.to_string(), "1a2b");
        assert_eq!(s.bits(), 13);
        assert_eq!("0x1a2b".parse::<Serial>().unwrap(), s);
        assert_eq!("a2b".parse::<Serial>().unwrap().as_bytes(), &[0x0a, 0x2b]);
        for bad in ["", "00", "xyz", &"1".repeat(41)] {
            assert!(bad.parse::<Serial>().is_err(), "{bad}");
        }
    }

    #[test]
    fn random_serials_are_128_bit_and_distinct() {
        let a = Serial::random().unwrap();
        let b = Serial::random().unwrap();
        assert_ne!(a, b);
        assert!(a.bits() <= 128 && a.bits() > 64);
    }

    #[test]
    fn tenant_ids() {
        assert!("acme-1".parse::<TenantId>().is_ok());
        for bad in ["", "-a", "Acme", "a_b", "a/b", &"a".repeat(64)] {
            assert!(bad.parse::<TenantId>().is_err(), "{bad}");
        }
    }
}
