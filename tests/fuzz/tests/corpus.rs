//! Replays the committed fuzz corpus (`tests/fuzz/corpus/<target>/`) and the inputs like those
//! that found bugs (`tests/fuzz/regressions/<target>/`) through the targets' checks, so each is a
//! regression test on stable Rust, without libFuzzer.

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_targets_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, check) in celeriac_fuzz::TARGETS {
        let dir = root.join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("the corpus of `{target}` ({}): {error}", dir.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .collect();
        assert!(
            inputs.len() >= 10,
            "the corpus of `{target}` holds {} inputs: was it committed?",
            inputs.len()
        );
        if let Ok(regressions) = std::fs::read_dir(root.join("../regressions").join(target)) {
            inputs.extend(regressions.map(|entry| entry.expect("a regression input").path()));
        }
        inputs.sort();
        for input in inputs {
            let data = std::fs::read(&input).expect("a corpus input");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "`{target}` fails on {}", input.display());
        }
    }
}
