//! A size written as a number and a binary unit: `4096`, `64KiB`, `256MiB`, `2GiB`.
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        let bad = || {
            format!("`{s}` is not a size: write a number of bytes, or one with KiB, MiB, GiB or TiB, as in 256MiB")
        };
        let t = s.trim();
        let (num, shift) = [("KiB", 10), ("MiB", 20), ("GiB", 30), ("TiB", 40)]
            .iter()
            .find_map(|(u, sh)| t.strip_suffix(u).map(|n| (n, *sh)))
            .unwrap_or((t, 0));
        let n: u64 = num.trim().parse().map_err(|_| bad())?;
        n.checked_mul(1 << shift)
            .filter(|v| *v > 0)
            .map(Size)
            .ok_or_else(bad)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(0) => Err(serde::de::Error::custom("a size of 0 bytes")),
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Bytes in the unit that writes them shortest: `64KiB`, `256MiB`, `1000`.
impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (u, sh) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if self.0 >= 1 << sh && self.0.is_multiple_of(1 << sh) {
                return write!(f, "{}{u}", self.0 >> sh);
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("256MiB".parse::<Size>(), Ok(Size(256 << 20)));
        assert_eq!("4096".parse::<Size>(), Ok(Size(4096)));
        assert_eq!(Size(64 << 10).to_string(), "64KiB");
        assert!("0MiB".parse::<Size>().is_err());
        assert!("12MB".parse::<Size>().unwrap_err().contains("12MB"));
        let s: Size = serde_yaml::from_str("1GiB").unwrap();
        assert_eq!(s, Size(1 << 30));
        assert_eq!(serde_yaml::from_str::<Size>("512").unwrap(), Size(512));
    }
}
