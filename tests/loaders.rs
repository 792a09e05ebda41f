//! Every file the fuzzers found a problem with (fuzz/regressions) and every seed (fuzz/seeds),
//! replayed through the loaders: each decodes or fails with a one-line error, never a panic; the
//! seeds decode to exactly what they hold or fail for the reason they were written for.

#[path = "../fuzz/fuzz_targets/network.rs"]
mod network;

use std::path::{Path, PathBuf};

use convnet_wgpu::{npy, weights::Weights};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(target: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in ["seeds", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) {
            found.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    assert!(!found.is_empty(), "no files for {target}");
    found
}

/// The library's error as the CLI prints it: one line, no control character of any kind.
fn assert_one_line<T>(path: &Path, result: convnet_wgpu::Result<T>) {
    if let Err(err) = result {
        let message = err.to_string();
        assert!(
            !message.chars().any(char::is_control),
            "{}: error with a control character: {message:?}",
            path.display()
        );
    }
}

#[test]
fn weights_files_from_the_fuzzer_fail_cleanly() {
    let network = network::network();
    for path in files("safetensors_weights") {
        assert_one_line(&path, Weights::load(&path, &network));
    }
}

#[test]
fn npy_files_from_the_fuzzer_fail_cleanly() {
    for path in files("npy_input") {
        assert_one_line(&path, npy::read(&path));
    }
}

/// The little-endian f32 values of `bytes[start..end]`, read independently of the loaders.
fn floats(bytes: &[u8], start: usize, end: usize) -> Vec<f32> {
    bytes[start..end]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The names of `target`'s seeds, sorted.
fn seed_names(target: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fuzz_dir().join("seeds").join(target))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn seed(target: &str, name: &str) -> (PathBuf, Vec<u8>) {
    let path = fuzz_dir().join("seeds").join(target).join(name);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

#[test]
fn weights_seeds_decode_to_what_they_hold() {
    let network = network::network();
    // Every seed is listed here, so that a new one gets an expectation.
    assert_eq!(
        seed_names("safetensors_weights"),
        [
            "f16.safetensors",
            "missing.safetensors",
            "valid.safetensors",
            "wrong_shape.safetensors"
        ]
    );

    // The header's tensors, their shapes and data offsets, as the file's JSON header states
    // them; the data starts after the 8-byte length and the 304-byte header.
    let (path, bytes) = seed("safetensors_weights", "valid.safetensors");
    let data = 8 + 304;
    let weights = Weights::load(&path, &network).unwrap();
    let expected = [
        ("conv1.weight", vec![2, 1, 3, 3], 0, 72),
        ("conv1.bias", vec![2], 72, 80),
        ("fc1.weight", vec![3, 32], 80, 464),
        ("fc1.bias", vec![3], 464, 476),
    ];
    let names: Vec<&str> = weights.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias"]
    );
    for (name, shape, start, end) in expected {
        let tensor = weights.get(name).unwrap();
        assert_eq!(tensor.shape, shape, "{name}");
        assert_eq!(
            tensor.data,
            floats(&bytes, data + start, data + end),
            "{name}"
        );
    }
    // A value spelled out, so that the test does not only agree with its own reading.
    assert_eq!(
        weights.tensor("conv1", "weight").unwrap()[0],
        f32::from_bits(0xbf3b_349c)
    );

    for (name, expected) in [
        (
            "f16.safetensors",
            "tensor 'fc1.weight' is F16, expected F32",
        ),
        ("missing.safetensors", "tensor 'fc1.bias' is missing (fuzz)"),
        (
            "wrong_shape.safetensors",
            "tensor 'conv1.weight' has shape [2, 2, 3, 3], fuzz expects [2, 1, 3, 3]",
        ),
    ] {
        let (path, _) = seed("safetensors_weights", name);
        let err = Weights::load(&path, &network).unwrap_err().to_string();
        assert_eq!(err, format!("{}: {expected}", path.display()));
    }
}

#[test]
fn npy_seeds_decode_to_what_they_hold() {
    assert_eq!(
        seed_names("npy_input"),
        [
            "bigendian.npy",
            "fortran.npy",
            "scalar.npy",
            "valid1d.npy",
            "valid4d.npy"
        ]
    );
    // Each header is padded to 128 bytes in all, where the data starts.
    for (name, shape) in [
        ("scalar.npy", vec![]),
        ("valid1d.npy", vec![5]),
        ("valid4d.npy", vec![1, 3, 4, 4]),
    ] {
        let (path, bytes) = seed("npy_input", name);
        let array = npy::read(&path).unwrap();
        assert_eq!(array.shape, shape, "{name}");
        assert_eq!(array.data, floats(&bytes, 128, bytes.len()), "{name}");
        assert_eq!(array.data.len(), shape.iter().product::<usize>(), "{name}");
    }
    let (path, _) = seed("npy_input", "valid1d.npy");
    assert_eq!(
        npy::read(&path).unwrap().data[0],
        f32::from_bits(0x3efe_be79)
    );

    for (name, expected) in [
        ("bigendian.npy", "big-endian data ('>f4')"),
        ("fortran.npy", "Fortran-order data"),
    ] {
        let (path, _) = seed("npy_input", name);
        let err = npy::read(&path).unwrap_err().to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
}

/// Fuzzing found a tensor name with a newline (`\n` in the JSON header) and an invalid offset:
/// the safetensors crate's own message quotes the name raw. The library's error escapes it.
#[test]
fn a_tensor_name_with_a_newline_stays_on_one_line() {
    let path = fuzz_dir()
        .join("regressions/safetensors_weights/invalid_offset_name_with_newline.safetensors");
    let err = Weights::load(&path, &network::network())
        .unwrap_err()
        .to_string();
    assert!(!err.contains('\n'), "{err:?}");
    assert!(
        err.contains("invalid offset for tensor `fco\\nv1.biasght`"),
        "{err}"
    );
}
