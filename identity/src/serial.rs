//! Certificate serial numbers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most content octets a serial may have (RFC 5280 §4.1.2.2).
const MAX_SERIAL_BYTES: usize = 20;

/// A certificate serial number: a positive integer as minimal big-endian bytes (no leading
/// zeros), shown as lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

/// A serial number that is not hex of 1 to 20 bytes (or is zero).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("invalid serial {0:?}: expected 1 to 20 bytes of hex")]
pub struct SerialError(String);

impl SerialError {
    /// The refused input (at most 80 characters of it).
    pub fn input(&self) -> &str {
        &self.0
    }
}

impl Serial {
    /// 128 random bits from the OS generator. Encoded as a positive DER INTEGER (with a 0x00
    /// pad when the top bit is set), so at most 17 content octets, under RFC 5280's limit of 20.
    #[cfg(feature = "io")]
    pub fn random() -> Result<Self, crate::IdentityError> {
        use ring::rand::{SecureRandom, SystemRandom};
        let rng = SystemRandom::new();
        loop {
            let mut bytes = [0u8; 16];
            rng.fill(&mut bytes)
                .map_err(|_| crate::IdentityError::Random)?;
            let serial = Self::from_be_bytes(&bytes);
            if !serial.0.is_empty() {
                return Ok(serial);
            }
        }
    }

    /// From big-endian bytes (leading zeros ignored), e.g. a certificate's raw serial.
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
    type Err = SerialError;

    /// Hex, case-insensitive, with optional `0x` and `:` separators (as `openssl` prints).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SerialError(crate::shown(s));
        let trimmed = s.trim();
        let trimmed = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        let mut digits: String = trimmed.chars().filter(|c| *c != ':').collect();
        if digits.is_empty() || digits.len() > 2 * MAX_SERIAL_BYTES {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_normalises() {
        let s: Serial = "00:1A:2b".parse().unwrap();
        assert_eq!(s.to_string(), "1a2b");
        assert_eq!(s.bits(), 13);
        assert_eq!("0x1a2b".parse::<Serial>().unwrap(), s);
        assert_eq!(" 1A2B ".parse::<Serial>().unwrap(), s);
        assert_eq!("a2b".parse::<Serial>().unwrap().as_bytes(), &[0x0a, 0x2b]);
        assert_eq!(Serial::from_be_bytes(&[0, 0, 0x1a, 0x2b]), s);
        assert_eq!(Serial::from_be_bytes(&[]).to_string(), "00");
        assert_eq!(
            "1".repeat(40).parse::<Serial>().unwrap().as_bytes().len(),
            20
        );
    }

    #[test]
    fn refuses_what_is_not_a_serial() {
        for bad in ["", "00", "0x", "xyz", "1g", "é", &"1".repeat(41)] {
            let err = bad.parse::<Serial>().unwrap_err();
            assert!(err.input().len() <= 80, "{bad}");
        }
        let long = "z".repeat(500);
        assert_eq!(long.parse::<Serial>().unwrap_err().input().len(), 80);
    }

    #[test]
    fn serde_is_the_hex_string() {
        let s: Serial = serde_json::from_str("\"0A:FF\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"0aff\"");
        assert!(serde_json::from_str::<Serial>("\"nope\"").is_err());
    }

    #[cfg(feature = "io")]
    #[test]
    fn random_serials_are_128_bit_and_distinct() {
        let a = Serial::random().unwrap();
        let b = Serial::random().unwrap();
        assert_ne!(a, b);
        assert!(a.bits() <= 128 && a.bits() > 64);
    }
}
