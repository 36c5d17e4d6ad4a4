//! Destinations: where messages are delivered, and each one's run-time state (enabled, circuit).

use redb::{ReadTransaction, ReadableTable as _};

use crate::error::Result;
use crate::records::{DestinationRecord, decode, encode};
use crate::tables::DESTINATIONS;
use crate::tx::Tx;

pub(crate) fn get(txn: &ReadTransaction, name: &str) -> Result<Option<DestinationRecord>> {
    txn.open_table(DESTINATIONS)?
        .get(name)?
        .map(|raw| decode("destinations", raw.value()))
        .transpose()
}

pub(crate) fn list(txn: &ReadTransaction) -> Result<Vec<(String, DestinationRecord)>> {
    let table = txn.open_table(DESTINATIONS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (name, raw) = entry?;
        out.push((
            name.value().to_owned(),
            decode("destinations", raw.value())?,
        ));
    }
    Ok(out)
}

pub(crate) fn put(tx: &mut Tx<'_>, name: &str, record: &DestinationRecord) -> Result<()> {
    tx.destinations()?.insert(name, encode(record).as_slice())?;
    Ok(())
}

/// Takes from `attempt` (the dispatcher's copy of the record, with an attempt's outcome
/// applied) what an attempt may change ([`DestinationRecord::take_attempt_state`]), if the
/// destination still exists: a deleted destination stays deleted.
pub(crate) fn apply_attempt(
    tx: &mut Tx<'_>,
    name: &str,
    attempt: &DestinationRecord,
) -> Result<()> {
    let Some(mut stored) = get_for_update(tx, name)? else {
        return Ok(());
    };
    stored.take_attempt_state(attempt);
    put(tx, name, &stored)
}

/// Removes the destination; false if there was none.
pub(crate) fn delete(tx: &mut Tx<'_>, name: &str) -> Result<bool> {
    Ok(tx.destinations()?.remove(name)?.is_some())
}

/// Reads a destination inside a write, for read-modify-write updates.
pub(crate) fn get_for_update(tx: &mut Tx<'_>, name: &str) -> Result<Option<DestinationRecord>> {
    tx.destinations()?
        .get(name)?
        .map(|raw| decode("destinations", raw.value()))
        .transpose()
}
