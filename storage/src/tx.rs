//! A write transaction whose tables are opened at most once per group commit.
//!
//! Opening a redb table costs a lookup in the table tree and a type check; paid by every job
//! of a batch it was most of the time spent applying the batch (about 20 µs of the 21 µs a
//! message took). A [`Tx`] opens each table on first use and keeps the handle for the rest of
//! the batch; the writer drops it before committing, as redb requires.

use redb::{Table, WriteTransaction};

use crate::error::Result;
use crate::idempotency::Index;
use crate::tables;

macro_rules! tx_tables {
    ($($field:ident: $def:ident => $k:ty, $v:ty;)*) => {
        /// The open transaction and its lazily opened tables.
        pub struct Tx<'t> {
            txn: &'t WriteTransaction,
            index: &'t mut Index,
            $($field: Option<Table<'t, $k, $v>>,)*
        }

        impl<'t> Tx<'t> {
            pub(crate) fn new(txn: &'t WriteTransaction, index: &'t mut Index) -> Self {
                Self { txn, index, $($field: None,)* }
            }

            /// The idempotency index's in-memory side, whose changes this transaction stages.
            pub(crate) fn index(&mut self) -> &mut Index {
                self.index
            }

            $(
                #[doc = concat!("The `", stringify!($field), "` table, opened on first use.")]
                pub(crate) fn $field(&mut self) -> Result<&mut Table<'t, $k, $v>> {
                    let table = match self.$field.take() {
                        Some(table) => table,
                        None => self.txn.open_table(tables::$def)?,
                    };
                    Ok(self.$field.insert(table))
                }
            )*
        }
    };
}

tx_tables! {
    meta: META => &'static str, u64;
    messages: MESSAGES => u128, &'static [u8];
    idempotency_runs: IDEMPOTENCY_RUNS => (u64, u128), u128;
    idempotency_run_dir: IDEMPOTENCY_RUN_DIR => u64, (u64, u64, u64);
    idempotency_loose: IDEMPOTENCY_LOOSE => u128, u128;
    deliveries: DELIVERIES => (u128, &'static str), &'static [u8];
    deliveries_due: DELIVERIES_DUE => (&'static str, u64, u128), ();
    dead_letters: DEAD_LETTERS => (u64, u128, &'static str), ();
    destinations: DESTINATIONS => &'static str, &'static [u8];
    messages_by_recipient: MESSAGES_BY_RECIPIENT => (&'static str, u128), ();
    suppressions: SUPPRESSIONS => (&'static str, &'static str), &'static [u8];
    suppressions_by_expiry: SUPPRESSIONS_BY_EXPIRY => (u64, &'static str, &'static str), ();
    preferences: PREFERENCES => &'static str, &'static [u8];
    audit: AUDIT => u128, &'static [u8];
    audit_by_subject: AUDIT_BY_SUBJECT => (&'static str, u128), ();
}

#[cfg(test)]
impl<'t> Tx<'t> {
    /// The bare transaction, for tables not listed above (tests' scratch tables).
    pub(crate) fn txn(&self) -> &'t WriteTransaction {
        self.txn
    }
}
