//! What the fuzz targets under `../fuzz/` reach (feature `fuzzing`): the crate-private codecs,
//! without widening their visibility for the rest of herald. Not an API.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::records::MessageRecord;

/// A stored value of the `messages` table: the record and the body.
pub fn decode_message(value: &[u8]) -> Result<(MessageRecord, &[u8])> {
    crate::messages::decode_message(value)
}

/// What [`decode_message`] reads.
pub fn encode_message(record: &MessageRecord, body: &[u8]) -> Vec<u8> {
    crate::messages::encode_message(record, None, body)
}

/// A stored record (every table but `messages` holds plain JSON).
pub fn decode<'a, T: Deserialize<'a>>(table: &'static str, bytes: &'a [u8]) -> Result<T> {
    crate::records::decode(table, bytes)
}

/// What [`decode`] reads.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    crate::records::encode(value)
}
