//! Every file the fuzzers found a problem with (fuzz/regressions) and every seed (fuzz/seeds),
//! replayed through the loaders: each decodes or fails with a one-line error, never a panic.

#[path = "../fuzz/fuzz_targets/network.rs"]
mod network;

use std::path::Path;

use convnet_wgpu::{npy, weights::Weights};

fn files(target: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for dir in ["seeds", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) {
            found.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    assert!(!found.is_empty(), "no files for {target}");
    found
}

fn assert_one_line<T>(path: &Path, result: Result<T, String>) {
    if let Err(message) = result {
        assert!(
            !message.contains('\n'),
            "{}: multi-line error {message:?}",
            path.display()
        );
    }
}

#[test]
fn weights_files_from_the_fuzzer_fail_cleanly() {
    let network = network::network();
    for path in files("safetensors_weights") {
        assert_one_line(
            &path,
            Weights::decode(&std::fs::read(&path).unwrap(), &network),
        );
    }
}

#[test]
fn npy_files_from_the_fuzzer_fail_cleanly() {
    for path in files("npy_input") {
        assert_one_line(&path, npy::decode(&std::fs::read(&path).unwrap()));
    }
}
