//! Currencies and exact decimal helpers.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// An ISO 4217 currency code with its number of minor-unit digits.
///
/// Prices, costs and wallets carry their currency; Routero never converts between
/// currencies and refuses to add amounts in different ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    minor_digits: u8,
}

impl Currency {
    /// US dollar, the currency of every public LLM price list.
    pub const USD: Currency = Currency::new(*b"USD", 2);
    /// Euro.
    pub const EUR: Currency = Currency::new(*b"EUR", 2);
    /// Pound sterling.
    pub const GBP: Currency = Currency::new(*b"GBP", 2);
    /// Japanese yen (no minor unit).
    pub const JPY: Currency = Currency::new(*b"JPY", 0);

    const fn new(code: [u8; 3], minor_digits: u8) -> Currency {
        Currency { code, minor_digits }
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // The code is three ASCII capitals by construction.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// How many digits after the decimal point the smallest unit has (2 for USD).
    pub fn minor_digits(&self) -> u32 {
        u32::from(self.minor_digits)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = UnknownCurrency;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Currency::USD, Currency::EUR, Currency::GBP, Currency::JPY]
            .into_iter()
            .find(|c| c.code().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCurrency(s.escape_debug().to_string()))
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

/// A currency code Routero does not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported currency \"{0}\" (supported: USD, EUR, GBP, JPY)")]
pub struct UnknownCurrency(String);

/// Parses a decimal written in plain or scientific notation (`0.000003`, `3e-06`,
/// `3E-6`) without passing through binary floating point, and refuses any text that
/// cannot be represented exactly.
pub fn parse_decimal_exact(text: &str) -> Result<Decimal, InvalidDecimal> {
    let text = text.trim();
    let invalid = || InvalidDecimal(text.escape_debug().to_string());
    if text.contains(['e', 'E']) {
        let value = Decimal::from_scientific(text).map_err(|_| invalid())?;
        // `from_scientific` keeps every digit it accepts; re-check by round trip of the
        // mantissa so that an over-long mantissa is refused rather than rounded.
        let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
        let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
        if digits > 28 {
            return Err(invalid());
        }
        Ok(value.normalize())
    } else {
        Decimal::from_str_exact(text).map_err(|_| invalid())
    }
}

/// A number that is not an exact decimal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not an exact decimal number")]
pub struct InvalidDecimal(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scientific_and_plain_decimals_are_exact() {
        assert_eq!(
            parse_decimal_exact("3e-06").unwrap(),
            Decimal::from_str_exact("0.000003").unwrap()
        );
        assert_eq!(
            parse_decimal_exact("1.875e-06").unwrap(),
            Decimal::from_str_exact("0.000001875").unwrap()
        );
        assert_eq!(
            parse_decimal_exact("0.017707200000000003")
                .unwrap()
                .to_string(),
            "0.017707200000000003"
        );
        assert!(parse_decimal_exact("abc").is_err());
        assert!(parse_decimal_exact("1.00000000000000000000000000001").is_err());
    }

    #[test]
    fn currency_codes() {
        assert_eq!("usd".parse::<Currency>().unwrap(), Currency::USD);
        assert_eq!(Currency::JPY.minor_digits(), 0);
        assert!("XYZ".parse::<Currency>().is_err());
    }
}
