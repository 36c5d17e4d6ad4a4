//! The API's JSON request bodies: the bytes are parsed as every request type the API reads
//! (`json_body::parse`, through `herald::http::fuzzing`), and each error is rendered as the
//! response would be.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    herald::http::fuzzing::parse_request_bodies(body);
});
