//! Replays the committed fuzz corpora (`coordinator/fuzz/corpus/<target>/`: seeds, and every
//! input a fuzz run found worth keeping) through the checks the fuzz targets make, so a fixed
//! crash stays fixed without a nightly toolchain. `scripts/fuzz` explores; this regresses.

use ipw_coordinator::domain::untrusted;
use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).expect("a readable input");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails the target's checks", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "{} holds no inputs", dir.display());
}

#[test]
fn the_result_batch_corpus_passes() {
    replay("result_batch", untrusted::result_batch);
}

#[test]
fn the_workload_parser_corpus_passes() {
    replay("workload_parser", untrusted::workload_lines);
}
