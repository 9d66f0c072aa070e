//! Mainland-China mobile numbers and verification codes.

use std::fmt;

/// A validated mainland-China mobile number: `1`, then `3`–`9`, then nine digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mobile(String);

/// Why a string is not a mobile number.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a mainland-China mobile number (1[3-9] followed by 9 digits)")]
pub struct InvalidMobile(pub String);

impl Mobile {
    /// Validates `text`.
    ///
    /// ```
    /// use sms_verification::mobile::Mobile;
    ///
    /// assert!(Mobile::parse("13800138000").is_ok());
    /// assert!(Mobile::parse("12800138000").is_err());
    /// assert!(Mobile::parse("1380013800").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, InvalidMobile> {
        let bytes = text.as_bytes();
        let valid = bytes.len() == 11
            && bytes[0] == b'1'
            && (b'3'..=b'9').contains(&bytes[1])
            && bytes.iter().all(u8::is_ascii_digit);
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            // Keep what we echo back short and printable.
            let shown: String = text.chars().take(32).filter(|c| !c.is_control()).collect();
            Err(InvalidMobile(shown))
        }
    }

    /// The number.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Mobile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A random six-digit code, zero-padded.
pub fn new_code() -> String {
    format!("{:06}", fastrand::u32(0..1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_numbers() {
        for good in ["13000000000", "19999999999", "15912345678"] {
            assert!(Mobile::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1",
            "10012345678",
            "12012345678",
            "1381234567",
            "138123456789",
            "1381234567a",
            "+8613812345678",
            "１３８１２３４５６７８",
        ] {
            assert!(Mobile::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..1000 {
            let code = new_code();
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
