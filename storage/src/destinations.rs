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
/// applied) what an attempt may change: the circuit, and the disabling after a 410. The rest
/// stays as stored. The copy may be stale: the API may have changed the destination (a new
/// secret, a new URL) or deleted it while the attempt was in flight, and writing the copy
/// whole would undo that change or bring the destination back. A deleted destination stays
/// deleted.
pub(crate) fn apply_attempt(
    tx: &mut Tx<'_>,
    name: &str,
    attempt: &DestinationRecord,
) -> Result<()> {
    let Some(mut stored) = get_for_update(tx, name)? else {
        return Ok(());
    };
    stored.circuit = attempt.circuit;
    if stored.enabled && !attempt.enabled {
        stored.enabled = false;
        stored.disabled_reason.clone_from(&attempt.disabled_reason);
        stored.updated_at_ms = attempt.updated_at_ms;
    }
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
