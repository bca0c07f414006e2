//! Display honours width, fill and alignment, so tables line up.

use routero_core::attribution::{BillingMode, TeamId};
use routero_core::invoice::Month;
use routero_core::{CostCategory, Currency, Provider};

#[test]
fn display_pads_like_a_string() {
    assert_eq!(format!("[{:<12}]", CostCategory::Input), "[input       ]");
    assert_eq!(format!("[{:>9}]", Provider::OpenAi), "[   openai]");
    assert_eq!(format!("[{:^9}]", BillingMode::Byok), "[  byok   ]");
    assert_eq!(
        format!("[{:-<8}]", TeamId::new("ops").unwrap()),
        "[ops-----]"
    );
    assert_eq!(format!("[{:>5}]", Currency::EUR), "[  EUR]");
    assert_eq!(
        format!("[{:>9}]", Month::parse("2026-11").unwrap()),
        "[  2026-11]"
    );
    assert_eq!(
        format!("[{:.3}]", Provider::Anthropic),
        "[ant]",
        "precision truncates"
    );
}
