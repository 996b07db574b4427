//! Any bytes an SQS message body can hold: the parser returns a notice or a typed error, and
//! never panics. Seed corpus: `../tests/data/events/*.json`
//! (`cargo +nightly fuzz run parse ../tests/data/events`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(notices) = termguard::sources::parse::parse_all(body) {
        assert!(!notices.is_empty(), "parse_all returns at least one notice");
    }
});
