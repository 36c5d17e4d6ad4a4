//! Schema migrations: one function per version step, applied in order at open.
//!
//! [`run`] is called by [`crate::Store::open`] in the same write transaction that creates the
//! tables, so a file is migrated completely or not at all (a crash midway leaves the old
//! version, migrated again at the next start). A file newer than [`SCHEMA_VERSION`] is refused
//! before anything is written. A new layout adds one step at the end of [`STEPS`] and bumps
//! [`SCHEMA_VERSION`]; steps are never edited once released.

use redb::{ReadableTable as _, ReadableTableMetadata as _, TableDefinition, WriteTransaction};

use crate::error::{Result, StorageError};
use crate::tables::{
    IDEMPOTENCY_BOUNDARY_KEY, IDEMPOTENCY_RUN_DIR, IDEMPOTENCY_RUNS, MESSAGES, META,
    SCHEMA_VERSION, SCHEMA_VERSION_KEY,
};

/// A step: migrates a file of version `from` to `from + 1`.
struct Step {
    from: u64,
    what: &'static str,
    apply: fn(&WriteTransaction) -> Result<()>,
}

/// Every step, in order: `STEPS[i]` takes version `i + 1` to `i + 2`.
const STEPS: &[Step] = &[Step {
    from: 1,
    what: "idempotency index in sealed runs",
    apply: v1_idempotency_runs,
}];

/// Brings the file in `txn` to [`SCHEMA_VERSION`]: records it in a new file, runs the steps
/// from the stored version in an older one, refuses a newer one.
pub(crate) fn run(txn: &WriteTransaction) -> Result<()> {
    let found = txn
        .open_table(META)?
        .get(SCHEMA_VERSION_KEY)?
        .map(|v| v.value());
    let Some(mut version) = found else {
        // A new file: nothing to migrate.
        txn.open_table(META)?
            .insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
        return Ok(());
    };
    if version > SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let first = version;
    for step in STEPS.iter().filter(|step| step.from >= first) {
        if step.from != version {
            return Err(StorageError::corrupt(
                "meta",
                format!("no migration from schema version {version}"),
            ));
        }
        tracing::info!(
            from = step.from,
            to = step.from + 1,
            what = step.what,
            "migrating storage"
        );
        (step.apply)(txn)?;
        version += 1;
        txn.open_table(META)?.insert(SCHEMA_VERSION_KEY, version)?;
    }
    Ok(())
}

/// Version 1's idempotency table: dedupe key → (message id, accepted at ms).
const V1_IDEMPOTENCY: TableDefinition<u128, (u128, u64)> = TableDefinition::new("idempotency");

/// 1 → 2: the `idempotency` table becomes run 0, already in key order; each message it names
/// gets its dedupe key in its value (version 1 values had none), so the run can be rebuilt from
/// the messages like any other; the boundary is set after the newest message, so the open
/// bucket starts empty.
fn v1_idempotency_runs(txn: &WriteTransaction) -> Result<()> {
    let mut by_message: Vec<(u128, u128)> = Vec::new();
    let (mut from_ms, mut until_ms) = (u64::MAX, 0);
    {
        let old = txn.open_table(V1_IDEMPOTENCY)?;
        let mut runs = txn.open_table(IDEMPOTENCY_RUNS)?;
        for entry in old.iter()? {
            let (key, value) = entry?;
            let (key, (id, accepted_ms)) = (key.value(), value.value());
            runs.insert((0, key), id)?;
            by_message.push((id, key));
            from_ms = from_ms.min(accepted_ms);
            until_ms = until_ms.max(accepted_ms.saturating_add(1));
        }
    }
    txn.delete_table(V1_IDEMPOTENCY)?;

    by_message.sort_unstable();
    let mut messages = txn.open_table(MESSAGES)?;
    let newest = messages.last()?.map(|(id, _)| id.value());
    let mut keyed = 0u64;
    for (id, key) in &by_message {
        let Some(value) = messages.get(*id)?.map(|v| v.value().to_vec()) else {
            continue; // erased since; the key stays in the run
        };
        let (record, body) = crate::messages::decode_message(&value)?;
        let value = crate::messages::encode_message(&record, Some(crate::DedupeKey(*key)), body);
        messages.insert(*id, value.as_slice())?;
        keyed += 1;
    }
    let boundary_ms = newest
        .map_or(0, |id| crate::idempotency::id_ms(id).saturating_add(1))
        .max(until_ms);
    if !by_message.is_empty() {
        txn.open_table(IDEMPOTENCY_RUN_DIR)?.insert(
            0,
            (
                from_ms.min(boundary_ms),
                boundary_ms,
                by_message.len() as u64,
            ),
        )?;
    }
    txn.open_table(META)?
        .insert(IDEMPOTENCY_BOUNDARY_KEY, boundary_ms)?;
    tracing::info!(
        keys = by_message.len(),
        messages = messages.len()?,
        keyed,
        "idempotency keys moved into run 0"
    );
    Ok(())
}
