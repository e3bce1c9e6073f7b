//! Replays the checked-in fuzz seeds (`fuzz/corpus/<target>/*`) through the
//! code each fuzz target exercises, so plain `cargo test` on stable catches
//! a regression on any of them without cargo-fuzz. Only "returns without
//! panicking" is checked; the fuzz targets check more.

use std::fs;
use std::path::Path;

/// The function behind each fuzz target, by target (= corpus folder) name.
fn replay_fn(target: &str) -> Option<fn(&[u8])> {
    match target {
        "client_hello" => Some(|data| {
            let _ = corral::proxy::l4::clienthello::parse_client_hello(data);
        }),
        _ => None,
    }
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let corpus_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for dir in fs::read_dir(&corpus_root).expect("read fuzz/corpus") {
        let dir = dir.expect("list fuzz/corpus").path();
        if !dir.is_dir() {
            continue;
        }
        let target = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // A corpus without a replay function is a fuzz target this test
        // does not know yet: fail so it gets added above.
        let replay = replay_fn(target)
            .unwrap_or_else(|| panic!("no replay function for fuzz corpus {target:?}"));
        for file in fs::read_dir(&dir).expect("read corpus folder") {
            let file = file.expect("list corpus folder").path();
            let data = fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            replay(&data);
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no fuzz corpus files under {}",
        corpus_root.display()
    );
}
