//! Currencies, the money grammar, and exact decimal helpers.
//!
//! Every amount a person or a price file hands Routero goes through one grammar:
//! ASCII digits, optionally a `.` and at least one more digit; no sign, exponent,
//! digit separators, white space, or leading or trailing dot. A wallet amount
//! ([`parse_amount`]) may have at most the currency's minor-unit digits after the dot
//! and is stored at exactly that scale (`1000` is `1000.00` in USD); a price
//! ([`parse_rate`]) may have as many as a [`Decimal`] holds. Nothing passes through
//! binary floating point.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;

/// An ISO 4217 currency code with its number of minor-unit digits.
///
/// Prices, costs and wallets carry their currency; Routero never adds amounts in
/// different currencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_digits: u8,
}

/// The active ISO 4217 codes and their minor units (funds codes, precious metals and
/// the test code are left out: nobody pays an invoice in them). Sorted by code, for
/// the binary search in `from_str` (a test keeps it so).
#[rustfmt::skip]
const ISO_4217: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("ANG", 2), ("AOA", 2), ("ARS", 2),
    ("AUD", 2), ("AWG", 2), ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2),
    ("BHD", 3), ("BIF", 0), ("BMD", 2), ("BND", 2), ("BOB", 2), ("BRL", 2), ("BSD", 2),
    ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2), ("CAD", 2), ("CDF", 2), ("CHF", 2),
    ("CLP", 0), ("CNY", 2), ("COP", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2),
    ("DJF", 0), ("DKK", 2), ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2),
    ("EUR", 2), ("FJD", 2), ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2),
    ("GMD", 2), ("GNF", 0), ("GTQ", 2), ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2),
    ("HUF", 2), ("IDR", 2), ("ILS", 2), ("INR", 2), ("IQD", 3), ("IRR", 2), ("ISK", 0),
    ("JMD", 2), ("JOD", 3), ("JPY", 0), ("KES", 2), ("KGS", 2), ("KHR", 2), ("KMF", 0),
    ("KPW", 2), ("KRW", 0), ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2), ("LBP", 2),
    ("LKR", 2), ("LRD", 2), ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2),
    ("MKD", 2), ("MMK", 2), ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2),
    ("MWK", 2), ("MXN", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2),
    ("NOK", 2), ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2),
    ("PHP", 2), ("PKR", 2), ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2),
    ("RUB", 2), ("RWF", 0), ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2),
    ("SGD", 2), ("SHP", 2), ("SLE", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2), ("STN", 2),
    ("SVC", 2), ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2), ("TND", 3),
    ("TOP", 2), ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0),
    ("USD", 2), ("UYU", 2), ("UZS", 2), ("VES", 2), ("VND", 0), ("VUV", 0), ("WST", 2),
    ("XAF", 0), ("XCD", 2), ("XOF", 0), ("XPF", 0), ("YER", 2), ("ZAR", 2), ("ZMW", 2),
    ("ZWG", 2),
];

impl Currency {
    /// US dollar, the currency of every public LLM price list.
    pub const USD: Currency = Currency::new("USD", 2);
    /// Euro.
    pub const EUR: Currency = Currency::new("EUR", 2);
    /// Pound sterling.
    pub const GBP: Currency = Currency::new("GBP", 2);
    /// Japanese yen (no minor unit).
    pub const JPY: Currency = Currency::new("JPY", 0);

    const fn new(code: &'static str, minor_digits: u8) -> Currency {
        Currency { code, minor_digits }
    }

    /// The three-letter code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// How many digits after the decimal point the smallest unit has (2 for USD).
    pub fn minor_digits(&self) -> u32 {
        u32::from(self.minor_digits)
    }

    /// The smallest unit as an amount (`0.01` for USD, `1` for JPY).
    pub fn minor_unit(&self) -> Decimal {
        Decimal::new(1, self.minor_digits())
    }

    /// An amount at the currency's scale: rescaled, never rounded, when it has no
    /// more digits than the minor unit (`5` becomes `5.00`); with more (exact usage,
    /// `0.0553334`), its trailing zeros beyond the minor unit dropped. What every
    /// amount a person sees is written as.
    pub fn canonical(&self, amount: Decimal) -> Decimal {
        let mut out = amount.normalize();
        if out.scale() < self.minor_digits() {
            out.rescale(self.minor_digits());
        }
        out
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.code())
    }
}

impl FromStr for Currency {
    type Err = UnknownCurrency;

    /// An upper-case ISO 4217 code: `USD`, never `usd` or ` USD`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Every queued event names its currency: a binary search over the sorted
        // codes, not a scan of 150 of them.
        ISO_4217
            .binary_search_by(|(code, _)| (*code).cmp(s))
            .map(|at| Currency::new(ISO_4217[at].0, ISO_4217[at].1))
            .map_err(|_| UnknownCurrency(s.escape_debug().to_string()))
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

/// A currency code that is not an upper-case ISO 4217 code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a currency: expected an upper-case ISO 4217 code such as USD or EUR")]
pub struct UnknownCurrency(String);

/// The grammar every amount follows, as the error messages state it.
pub const AMOUNT_GRAMMAR: &str = "ASCII digits, optionally followed by '.' and 1 to {n} more \
     digits; no sign, exponent, separator, white space, or leading or trailing dot";

/// Text that is not an amount in the money grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" is not an amount{currency}: {grammar}")]
pub struct InvalidAmount {
    text: String,
    currency: String,
    grammar: String,
}

impl InvalidAmount {
    fn new(text: &str, currency: Option<Currency>, max_fraction: u32) -> InvalidAmount {
        let shown: String = text.chars().take(64).collect();
        let grammar = if max_fraction == 0 {
            "ASCII digits only (the currency has no minor unit); no sign, exponent, \
             separator, white space or dot"
                .to_owned()
        } else {
            AMOUNT_GRAMMAR.replace("{n}", &max_fraction.to_string())
        };
        InvalidAmount {
            text: shown.escape_debug().to_string(),
            currency: currency.map(|c| format!(" in {c}")).unwrap_or_default(),
            grammar,
        }
    }
}

/// The digits of an amount in the grammar with at most `max_fraction` digits after
/// the dot, as a mantissa and scale.
fn grammar(text: &str, max_fraction: u32) -> Option<Decimal> {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !fraction.is_none_or(digits) {
        return None;
    }
    let fraction = fraction.unwrap_or_default();
    let scale = u32::try_from(fraction.len()).ok()?;
    if scale > max_fraction {
        return None;
    }
    // Leading zeros carry nothing; what is left must fit a Decimal's 96-bit mantissa.
    let significant = format!("{}{fraction}", whole.trim_start_matches('0'));
    if significant.len() > 28 {
        return None;
    }
    let mantissa: i128 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    Decimal::try_from_i128_with_scale(mantissa, scale).ok()
}

/// Parses an amount of money in `currency`: the money grammar with at most the
/// currency's minor-unit digits after the dot. The result is at the currency's scale
/// (`"1000"` and `"1000.0"` are both `1000.00` in USD). Zero is an amount; whether it
/// is allowed is the caller's rule.
pub fn parse_amount(text: &str, currency: Currency) -> Result<Decimal, InvalidAmount> {
    let max = currency.minor_digits();
    let mut value =
        grammar(text, max).ok_or_else(|| InvalidAmount::new(text, Some(currency), max))?;
    value.rescale(max);
    Ok(value)
}

/// Parses a price: the money grammar with up to 28 digits after the dot, exact.
pub fn parse_rate(text: &str) -> Result<Decimal, InvalidAmount> {
    grammar(text, 28).ok_or_else(|| InvalidAmount::new(text, None, 28))
}

/// Parses a decimal written in plain or scientific notation (`0.000003`, `3e-06`,
/// `3E-6`) without passing through binary floating point, and refuses any text that
/// cannot be represented exactly. For data Routero reads from providers and community
/// price maps; amounts people enter go through [`parse_amount`] or [`parse_rate`].
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

/// Daily exchange rates: how many units of one currency one unit of another buys.
///
/// Usage priced in another currency than a wallet's is converted at the rate of the
/// day the request was made (its UTC day), exactly (`amount × rate`, nothing
/// rounded), and the debit records the rate. With no rate for that day the spend is
/// not debited at a guess: the drain sets its batch aside until the rate is there.
pub trait ExchangeRates: fmt::Debug + Send + Sync + 'static {
    /// The rate from `from` to `to` on `day`; `None` when unknown. The same currency
    /// always converts at 1.
    fn rate(&self, from: Currency, to: Currency, day: NaiveDate) -> Option<Decimal>;
}

/// A conversion as a debit or an invoice line records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conversion {
    /// The currency the spend was priced in.
    pub from: Currency,
    /// The amount in it, exact.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// The rate applied (`to` per unit of `from`).
    #[serde(with = "rust_decimal::serde::str")]
    pub rate: Decimal,
    /// The day whose rate it is.
    pub day: NaiveDate,
}

/// Rates in memory, read from a CSV file (the default rate source):
///
/// ```text
/// date,from,to,rate
/// 2026-11-02,USD,EUR,0.9234
/// 2026-11-02,USD,GBP,0.7851
/// ```
///
/// Each rate is for one day and one direction (the inverse is never derived: `1/r` is
/// not exact); rates follow the money grammar ([`parse_rate`]) and are positive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateTable {
    rates: BTreeMap<(Currency, Currency, NaiveDate), Decimal>,
}

impl RateTable {
    /// No rates: only a currency into itself converts.
    pub fn new() -> RateTable {
        RateTable::default()
    }

    /// Sets one rate.
    pub fn insert(&mut self, from: Currency, to: Currency, day: NaiveDate, rate: Decimal) {
        self.rates.insert((from, to, day), rate);
    }

    /// How many rates it holds.
    pub fn len(&self) -> usize {
        self.rates.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// Reads `date,from,to,rate` lines after that header line; a line that repeats a
    /// day and direction, or any malformed line, is an error naming its line number.
    pub fn from_csv(text: &str) -> Result<RateTable, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        match lines.next() {
            Some((_, header)) if header.trim() == "date,from,to,rate" => {}
            _ => return Err("line 1: expected the header date,from,to,rate".into()),
        }
        let mut table = RateTable::new();
        for (i, line) in lines {
            let at = |e: String| format!("line {}: {e}", i + 1);
            let cells: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
            let [date, from, to, rate] = cells[..] else {
                return Err(at("expected date,from,to,rate".into()));
            };
            let day = NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .map_err(|_| at(format!("{date:?} is not a YYYY-MM-DD date")))?;
            let from: Currency = from
                .parse()
                .map_err(|e: UnknownCurrency| at(e.to_string()))?;
            let to: Currency = to.parse().map_err(|e: UnknownCurrency| at(e.to_string()))?;
            let rate = parse_rate(rate).map_err(|e| at(e.to_string()))?;
            if rate.is_zero() {
                return Err(at("a rate is positive".into()));
            }
            if from == to {
                return Err(at(format!("a rate from {from} to itself")));
            }
            if table.rates.insert((from, to, day), rate).is_some() {
                return Err(at(format!("{from} to {to} on {day} is given twice")));
            }
        }
        Ok(table)
    }
}

impl ExchangeRates for RateTable {
    fn rate(&self, from: Currency, to: Currency, day: NaiveDate) -> Option<Decimal> {
        if from == to {
            return Some(Decimal::ONE);
        }
        self.rates.get(&(from, to, day)).copied()
    }
}

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
    fn every_listed_code_is_found_and_nothing_else() {
        assert!(
            ISO_4217.windows(2).all(|w| w[0].0 < w[1].0),
            "ISO_4217 must be sorted by code, without repeats"
        );
        for &(code, minor) in ISO_4217 {
            let found: Currency = code.parse().unwrap();
            assert_eq!(
                (found.code(), found.minor_digits()),
                (code, u32::from(minor))
            );
        }
        for text in [
            "", "A", "AAA", "ZZZ", "ZWX", "USDX", "US", "usd", "AED ", " USD",
        ] {
            assert!(text.parse::<Currency>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn currency_codes_are_upper_case_iso_4217() {
        assert_eq!("USD".parse::<Currency>().unwrap(), Currency::USD);
        assert_eq!("JPY".parse::<Currency>().unwrap(), Currency::JPY);
        assert_eq!("KWD".parse::<Currency>().unwrap().minor_digits(), 3);
        assert_eq!("CHF".parse::<Currency>().unwrap().code(), "CHF");
        for bad in ["usd", "Usd", " USD", "USD ", "XYZ", "US", "USDD", ""] {
            let e = bad.parse::<Currency>().unwrap_err().to_string();
            assert!(e.contains("ISO 4217"), "{bad:?}: {e}");
        }
        assert_eq!(format!("[{:<5}]", Currency::EUR), "[EUR  ]");
    }

    #[test]
    fn amounts_follow_one_grammar() {
        let usd = Currency::USD;
        for (text, want) in [
            ("1000", "1000.00"),
            ("1000.0", "1000.00"),
            ("1000.00", "1000.00"),
            ("0.5", "0.50"),
            ("0", "0.00"),
            ("007.10", "7.10"),
            ("999999999999999999999999.99", "999999999999999999999999.99"),
        ] {
            assert_eq!(parse_amount(text, usd).unwrap().to_string(), want, "{text}");
        }
        for bad in [
            "1_000",
            "1e2",
            "1E2",
            "+3.00",
            "-3.00",
            " 4.00",
            "4.00 ",
            "5.",
            ".5",
            "1.500",
            "1,000.00",
            "",
            ".",
            "0x10",
            "1.5000000",
            "١٢",
            "NaN",
            "inf",
            "1..2",
            "1.2.3",
            "99999999999999999999999999999",
        ] {
            let e = parse_amount(bad, usd).unwrap_err().to_string();
            assert!(e.contains("ASCII digits"), "{bad:?}: {e}");
        }
        assert_eq!(
            parse_amount("1500", Currency::JPY).unwrap().to_string(),
            "1500"
        );
        assert!(parse_amount("1500.0", Currency::JPY).is_err());
        let kwd = "KWD".parse::<Currency>().unwrap();
        assert_eq!(parse_amount("1.5", kwd).unwrap().to_string(), "1.500");
    }

    #[test]
    fn rates_take_any_exact_scale_and_nothing_else() {
        assert_eq!(parse_rate("0.075").unwrap().to_string(), "0.075");
        assert_eq!(parse_rate("2").unwrap().to_string(), "2");
        for bad in ["3e-06", "-1", " 1", "1.", ".1", "1_0"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rate_tables_are_read_strictly() {
        let table = RateTable::from_csv(
            "date,from,to,rate\n2026-11-02,USD,EUR,0.9234\n\n2026-11-03,USD,EUR,0.92\r\n",
        )
        .unwrap();
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let usd_eur = |d| table.rate(Currency::USD, Currency::EUR, day(d));
        assert_eq!(usd_eur(2).map(|r| r.to_string()), Some("0.9234".into()));
        assert_eq!(usd_eur(3).map(|r| r.to_string()), Some("0.92".into()));
        assert_eq!(usd_eur(4), None, "no rate is guessed from another day");
        assert_eq!(
            table.rate(Currency::EUR, Currency::USD, day(2)),
            None,
            "nor from the inverse"
        );
        assert_eq!(
            table.rate(Currency::JPY, Currency::JPY, day(9)),
            Some(Decimal::ONE)
        );
        for (bad, says) in [
            ("2026-11-02,USD,EUR,0.9\n", "header"),
            ("date,from,to,rate\n2026-11-02,USD,EUR,9e-1\n", "line 2"),
            ("date,from,to,rate\n2026-11-02,usd,EUR,0.9\n", "ISO 4217"),
            ("date,from,to,rate\n2026-11-31,USD,EUR,0.9\n", "YYYY-MM-DD"),
            ("date,from,to,rate\n2026-11-02,USD,EUR,0\n", "positive"),
            ("date,from,to,rate\n2026-11-02,USD,USD,1\n", "itself"),
            (
                "date,from,to,rate\n2026-11-02,USD,EUR,0.9\n2026-11-02,USD,EUR,0.8\n",
                "line 3",
            ),
            ("date,from,to,rate\n2026-11-02,USD,EUR\n", "expected"),
        ] {
            let e = RateTable::from_csv(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn canonical_amounts_keep_the_minor_unit_and_no_more_zeros() {
        let usd = Currency::USD;
        let d = |s: &str| Decimal::from_str_exact(s).unwrap();
        assert_eq!(usd.canonical(d("1000.000000000")).to_string(), "1000.00");
        assert_eq!(
            usd.canonical(d("1001163.5000000")).to_string(),
            "1001163.50"
        );
        assert_eq!(usd.canonical(d("0.05533340")).to_string(), "0.0553334");
        assert_eq!(usd.canonical(d("-3")).to_string(), "-3.00");
        assert_eq!(Currency::JPY.canonical(d("1500.00")).to_string(), "1500");
        assert_eq!(usd.minor_unit().to_string(), "0.01");
    }
}
