//! Prices that change while running: a table swapped whole under readers
//! ([`LivePrices`]), and a price file layered over a base table ([`layered`]), what a
//! reload builds. The file watching and the signal live with the process (the
//! example gateway polls the file and listens for SIGHUP).

use std::sync::{Arc, PoisonError, RwLock};

use super::{LoadError, OverrideError, PriceTable};

/// A price table replaced at once while requests are priced: a request takes the
/// table in force ([`current`](Self::current), an `Arc` clone under a read lock held
/// for a few nanoseconds) and prices with it from start to end, so every cost names
/// the one version that priced it; [`replace`](Self::replace) swaps in a whole new
/// table for the requests that start after it.
#[derive(Debug, Clone)]
pub struct LivePrices {
    table: Arc<RwLock<Arc<PriceTable>>>,
}

impl LivePrices {
    /// Prices from `table` until replaced.
    pub fn new(table: Arc<PriceTable>) -> LivePrices {
        LivePrices {
            table: Arc::new(RwLock::new(table)),
        }
    }

    /// The table in force.
    pub fn current(&self) -> Arc<PriceTable> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `table` in force; answers the one it replaces.
    pub fn replace(&self, table: Arc<PriceTable>) -> Arc<PriceTable> {
        std::mem::replace(
            &mut *self.table.write().unwrap_or_else(PoisonError::into_inner),
            table,
        )
    }
}

/// Why a price file could not be put in force.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// The file does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// It cannot be layered over the base.
    #[error(transparent)]
    Override(#[from] OverrideError),
}

/// The table a price file (either format) makes over `base`: its models replace the
/// base's, as overrides do. The version is `{base}+{file's version}@{crc32 of the
/// file}`, so an edit that forgets to change the file's own version still gives
/// its costs a version of their own.
pub fn layered(base: &PriceTable, text: &str) -> Result<PriceTable, LayerError> {
    let (file, _) = super::load(text)?;
    let mut table = base.with_overrides(&file)?;
    table.set_version(&format!(
        "{}@{:08x}",
        table.version(),
        crc32fast::hash(text.as_bytes())
    ));
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Provider;

    const FILE: &str = r#"
format = 1
version = "acme-negotiated"
currency = "USD"

[[model]]
provider = "openai"
name = "o4-mini"
input = "0.50"
output = "2.00"
"#;

    #[test]
    fn a_replaced_table_is_seen_by_later_readers_only() {
        let live = LivePrices::new(PriceTable::bundled());
        let before = live.current();
        let negotiated = Arc::new(layered(&PriceTable::bundled(), FILE).unwrap());
        assert!(
            negotiated
                .version()
                .starts_with(&format!("{}+acme-negotiated@", before.version()))
        );
        let old = live.replace(Arc::clone(&negotiated));
        assert!(Arc::ptr_eq(&old, &before));
        assert_eq!(
            before.version(),
            PriceTable::bundled().version(),
            "a held table stays"
        );
        assert_eq!(live.current().version(), negotiated.version());
        assert!(live.current().contains(&Provider::OpenAi, "o4-mini"));
        // The same file edited without a new version: another version all the same.
        let edited = layered(&PriceTable::bundled(), &FILE.replace("0.50", "0.55")).unwrap();
        assert_ne!(edited.version(), negotiated.version());
        // A file that does not load is an error, never an empty table.
        assert!(layered(&PriceTable::bundled(), "format = 1\nversion = ").is_err());
    }
}
