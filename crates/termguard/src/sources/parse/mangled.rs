//! Cheap, always-run robustness check beside the fuzz target (`crates/termguard/fuzz`): every
//! prefix and many single-byte corruptions of every fixture must give a notice or a typed
//! error — never a panic, and never an empty list of notices.

use super::parse_all;

/// Bytes a corruption writes, chosen to break JSON structure, strings, numbers and UTF-8.
const REPLACEMENTS: [u8; 8] = [b'"', b'{', b'}', b'[', b':', b'0', b'\\', 0xff];

fn check(name: &str, body: &[u8]) {
    // A panic here fails the test with the fixture and the mangled body in the message.
    let result = std::panic::catch_unwind(|| parse_all(body));
    match result {
        Ok(Ok(notices)) => assert!(!notices.is_empty(), "{name}: no notices"),
        Ok(Err(e)) => assert!(!e.label().is_empty()),
        Err(_) => panic!(
            "{name}: parser panicked on {:?}",
            String::from_utf8_lossy(body)
        ),
    }
}

#[test]
fn every_prefix_and_byte_corruption_of_every_fixture_parses_or_fails_cleanly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/events");
    let mut fixtures: Vec<_> = std::fs::read_dir(dir)
        .expect("fixture directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 15, "{fixtures:?}");
    let mut cases = 0usize;
    for path in &fixtures {
        let name = path.display().to_string();
        let body = std::fs::read(path).expect("fixture");
        for end in 0..=body.len() {
            check(&name, &body[..end]);
        }
        for i in 0..body.len() {
            let mut mangled = body.clone();
            mangled[i] = REPLACEMENTS[i % REPLACEMENTS.len()];
            check(&name, &mangled);
            mangled[i] = body[i] ^ 0x20;
            check(&name, &mangled);
        }
        cases += 3 * body.len() + 1;
    }
    assert!(cases > 10_000, "{cases}");
}
