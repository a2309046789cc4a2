//! `MacAddr`: the machine's identity on the wire, parsed once at the edge.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet MAC address. Displays as lowercase `aa:bb:cc:dd:ee:ff`,
/// the form Tinkerbell's Hardware objects use and index by.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a MAC address (expected six hex pairs such as 08:00:27:29:4e:67)")]
pub struct MacParseError {
    input: String,
}

impl MacAddr {
    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Dash-separated form (`08-00-27-29-4e-67`), as used in some URLs.
    pub fn dashed(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Accepts `:` or `-` as separator, either case, nothing else: a MAC from YAML
    /// written by hand must not be half-guessed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError {
            input: s.to_string(),
        };
        let bytes = s.as_bytes();
        if bytes.len() != 17 {
            return Err(err());
        }
        let sep = bytes[2];
        if sep != b':' && sep != b'-' {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, octet) in out.iter_mut().enumerate() {
            let at = i * 3;
            if i < 5 && bytes[at + 2] != sep {
                return Err(err());
            }
            let pair = std::str::from_utf8(&bytes[at..at + 2]).map_err(|_| err())?;
            if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *octet = u8::from_str_radix(pair, 16).map_err(|_| err())?;
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators_and_cases() {
        let a: MacAddr = "08:00:27:29:4E:67".parse().unwrap();
        let b: MacAddr = "08-00-27-29-4e-67".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "08:00:27:29:4e:67");
        assert_eq!(a.dashed(), "08-00-27-29-4e-67");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "08:00:27:29:4e",
            "08:00:27:29:4e:6g",
            "08:00-27:29:4e:67",
            "08:00:27:29:4e:67:",
            "0800.2729.4e67",
            "+8:00:27:29:4e:67",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad} accepted");
        }
    }
}
