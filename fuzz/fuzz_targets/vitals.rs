//! The `POST /vitals` beacon parser, on arbitrary bodies: whatever it accepts obeys the
//! documented bounds, and whatever it rejects has an error that formats. The page normaliser
//! is also run on the body as text, where it is valid UTF-8.
#![no_main]

use herald_actors::perf::vitals::{
    MAX_BEACONS, MAX_BODY_BYTES, MAX_ID_CHARS, MAX_PAGE_CHARS, normalise_page, parse_beacons,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match parse_beacons(body) {
        Ok(beacons) => {
            assert!(body.len() <= MAX_BODY_BYTES);
            assert!(beacons.len() <= MAX_BEACONS);
            for b in &beacons {
                assert!(b.value.is_finite() && b.value >= 0.0 && b.value <= b.metric.max_value());
                assert!(b.value.is_sign_positive(), "-0 is stored as 0");
                assert!(!b.id.is_empty() && b.id.chars().count() <= MAX_ID_CHARS);
                assert_page(&b.page);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(page) = normalise_page(text)
    {
        assert_page(&page);
        // Normalising a normalised page changes nothing.
        assert_eq!(normalise_page(&page).as_deref(), Ok(page.as_str()));
    }
});

fn assert_page(page: &str) {
    assert!(page.starts_with('/'), "{page:?}");
    assert!(page.chars().count() <= MAX_PAGE_CHARS, "{page:?}");
    assert!(
        !page.contains(['?', '#']) && !page.contains(char::is_control),
        "{page:?}"
    );
}
