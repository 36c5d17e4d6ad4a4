//! The storage codecs, each on the same bytes: `MessageId` and `DeliveryKey` parsing, the
//! JSON of every stored record, and the `messages` value layout (`decode_message`).
//!
//! Beyond "no panic": whatever decodes, re-encodes to something that decodes to the same
//! value, and a parsed id or key displays as text that parses back to it (the same text, up
//! to the case of the ULID, since ids are looked up by what users send back).
#![no_main]

use std::fmt::Debug;

use herald_storage::fuzzing::{decode, decode_message, encode, encode_message};
use herald_storage::{
    AuditEntry, CircuitRecord, DeliveryKey, DeliveryRecord, DestinationRecord, MessageId,
    MessageRecord, Preferences, SuppressionRecord,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = text.parse::<MessageId>() {
            let shown = id.to_string();
            assert!(
                shown.eq_ignore_ascii_case(text),
                "{text:?} parsed as {shown}"
            );
            assert_eq!(shown.parse(), Ok(id));
        }
        if let Ok(key) = text.parse::<DeliveryKey>() {
            let shown = key.to_string();
            assert!(
                shown.eq_ignore_ascii_case(text),
                "{text:?} parsed as {shown}"
            );
            assert_eq!(shown.parse(), Ok(key));
        }
    }
    if let Some(bits) = data.first_chunk::<16>() {
        let id = MessageId(u128::from_le_bytes(*bits));
        assert_eq!(id.to_string().parse(), Ok(id));
    }

    if let Ok((record, body)) = decode_message(data) {
        let again = encode_message(&record, body);
        match decode_message(&again) {
            Ok((r, b)) => assert!(r == record && b == body),
            Err(e) => panic!("re-encoded message does not decode: {e}"),
        }
    }
    round_trip::<MessageRecord>("messages", data);
    round_trip::<DeliveryRecord>("deliveries", data);
    round_trip::<DestinationRecord>("destinations", data);
    round_trip::<SuppressionRecord>("suppressions", data);
    round_trip::<Preferences>("preferences", data);
    round_trip::<AuditEntry>("audit", data);
    round_trip::<CircuitRecord>("destinations", data);
});

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(
    table: &'static str,
    data: &[u8],
) {
    if let Ok(record) = decode::<T>(table, data) {
        let encoded = encode(&record);
        match decode::<T>(table, &encoded) {
            Ok(again) => assert_eq!(again, record),
            Err(e) => panic!("re-encoded {table} record does not decode: {e}"),
        }
    }
}
