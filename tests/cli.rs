//! Bad input through the real binary: a one-line error, a non-zero exit, no panic, no output file.
//! The tests that open an adapter are marked as GPU tests, ignored with CONVNET_SKIP_GPU_TESTS=1
//! (see build.rs).

mod common;

use std::path::Path;
use std::process::Command;

fn convnet<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String, String) {
    // No tune cache of the user's: every run chooses its kernels as the flags and the adapter
    // say, unless a test gives --tune-cache.
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(args)
        .env("CONVNET_TUNE_CACHE", "none")
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clean_failure<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], expected: &str) {
    let (ok, _, stderr) = convnet(args);
    assert!(!ok, "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
    let error_lines = stderr.lines().filter(|l| l.starts_with("error")).count();
    assert_eq!(error_lines, 1, "{args:?}: {stderr}");
    // Beyond clap's own usage errors (which add a usage line or a hint), the error is the one
    // line stderr holds: a message that carried a raw newline would show as a second line here.
    if !stderr.contains("\nUsage: ") && !stderr.contains("try '--help'") {
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('['))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn shapes_prints_the_seeds_table() {
    let (ok, stdout, _) = convnet(&["shapes", "--batch", "32"]);
    assert!(ok);
    assert!(stdout.contains("[32, 56, 56, 96]"));
    assert!(stdout.contains("62,378,344"));
    let (ok, json, _) = convnet(&["shapes", "--batch", "32", "--json"]);
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["total_parameters"], 62_378_344);
}

#[test]
fn shapes_prints_the_torchvision_networks() {
    let (ok, stdout, _) = convnet(&["shapes", "--model", "resnet50", "--num-classes", "10"]);
    assert!(ok);
    // 25,557,032 with 1000 classes; the fc loses 2048 x 990 + 990.
    assert!(stdout.contains("23,528,522"), "{stdout}");
    assert!(stdout.contains("layer4") && !stdout.contains("layer4.2.conv3"));
    let (ok, stdout, _) = convnet(&["shapes", "--model", "resnet50", "--detail", "layer"]);
    assert!(ok && stdout.contains("layer4.2.conv3"), "{stdout}");
    let (ok, json, _) = convnet(&["shapes", "--model", "googlenet", "--aux-logits", "--json"]);
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["total_parameters"], 13_004_888);
    assert_eq!(doc["detail"], "stage");
}

#[test]
fn bad_network_options_fail_cleanly() {
    assert_clean_failure(
        &["shapes", "--model", "resnet50", "--num-classes", "0"],
        "--num-classes must be at least 1",
    );
    assert_clean_failure(
        &["shapes", "--model", "vgg16", "--input-size", "16"],
        "layer features.30 produces an empty output",
    );
    assert_clean_failure(
        &["shapes", "--model", "vgg16", "--aux-logits"],
        "--aux-logits applies to googlenet only",
    );
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn check_and_run_serve_resnet_with_a_custom_head() {
    let small = [
        "--model",
        "resnet18",
        "--num-classes",
        "7",
        "--input-size",
        "32",
    ];
    let (ok, stdout, stderr) = convnet(&[&["check"][..], &small].concat());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("batch norms folded") && stdout.contains("check passed"));
    let (ok, stdout, _) = convnet(&[&["check", "--explicit-bn"][..], &small].concat());
    assert!(ok && !stdout.contains("folded"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (w, x, y) = (path("w.safetensors"), path("x.npy"), path("y.npy"));
    let (ok, _, stderr) = convnet(&[&["init", "--out", w.as_str()][..], &small[..4]].concat());
    assert!(ok, "{stderr}");
    convnet_wgpu::npy::write(
        std::path::Path::new(&x),
        &[2, 3, 32, 32],
        &vec![0.5; 2 * 3 * 32 * 32],
    )
    .unwrap();
    let run = [
        "run",
        "--weights",
        w.as_str(),
        "--input",
        x.as_str(),
        "--output",
        y.as_str(),
    ];
    let (ok, _, stderr) = convnet(&[&run[..], &small].concat());
    assert!(ok, "{stderr}");
    let logits = convnet_wgpu::npy::read(std::path::Path::new(&y)).unwrap();
    assert_eq!(logits.shape, vec![2, 7]);
    // Gradients under torchvision's names, batch norms' included (trained by batch statistics).
    let g = path("g.safetensors");
    let (ok, stdout, stderr) = convnet(&[&run[..], &small, &["--grads", g.as_str()]].concat());
    assert!(ok, "{stdout}{stderr}");
    let bytes = std::fs::read(&g).unwrap();
    let grads = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for name in [
        "conv1.weight",
        "bn1.weight",
        "layer2.0.downsample.1.bias",
        "fc.bias",
    ] {
        let tensor = grads
            .tensor(name)
            .unwrap_or_else(|_| panic!("no gradient of {name}"));
        assert_eq!(tensor.dtype(), safetensors::Dtype::F32, "{name}");
    }
    for absent in ["layer1.0.conv1.bias", "bn1.running_mean"] {
        assert!(grads.tensor(absent).is_err(), "{absent} is no parameter");
    }
    // The same file for the default 1000-class head is refused, naming the tensor.
    assert_clean_failure(
        &[&run[..], &["--model", "resnet18", "--input-size", "32"]].concat(),
        "fc.weight",
    );
}

#[test]
fn bad_flags_and_settings_fail_cleanly() {
    assert_clean_failure(&["bench", "--frobnicate"], "unexpected argument");
    assert_clean_failure(&["shapes", "--batch", "0"], "batch must be at least 1");
    assert_clean_failure(&["shapes", "--batch", "-3"], "error");
    assert_clean_failure(&["shapes", "--model", "lenet"], "known models: alexnet");
    assert_clean_failure(&["bench", "--backend", "glide"], "unknown backend 'glide'");
    assert_clean_failure(&["bench", "--devices", "17"], "17 is not in 1..=16");
    assert_clean_failure(
        &["bench", "--devices", "3"],
        "a two-device layout runs on 2 devices; more devices need --parallel data",
    );
    assert_clean_failure(
        &["peak", "--parallel", "data", "--devices", "2"],
        "this command runs on one device",
    );
    assert_clean_failure(
        &["bench", "--sync-batch-norm"],
        "--sync-batch-norm is for data-parallel replicas: add --parallel data",
    );
    assert_clean_failure(
        &["train", "--bucket-mb", "4"],
        "--bucket-mb is for data-parallel replicas",
    );
    assert_clean_failure(
        &[
            "check",
            "--model",
            "alexnet-2gpu",
            "--parallel",
            "model",
            "--devices",
            "3",
        ],
        "more devices need --parallel data",
    );
    assert_clean_failure(
        &[
            "bench",
            "--devices",
            "2",
            "--adapter",
            "0",
            "--adapter",
            "0",
            "--adapter",
            "0",
        ],
        "3 adapters given for 2 device(s)",
    );
    assert_clean_failure(
        &["bench", "--compare-devices"],
        "--compare-devices compares --devices 2",
    );
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn bad_adapters_and_layouts_fail_cleanly() {
    assert_clean_failure(
        &["bench", "--adapter", "no-such-gpu"],
        "no adapter matches 'no-such-gpu'",
    );
    assert_clean_failure(&["bench", "--adapter", "99"], "no adapter matches '99'");
    assert_clean_failure(
        &[
            "bench",
            "--devices",
            "2",
            "--adapter",
            "0",
            "--adapter",
            "99",
        ],
        "no adapter matches '99'",
    );
    assert_clean_failure(
        &["bench", "--devices", "2", "--batches", "1"],
        "alexnet has no two-device layout",
    );
    assert_clean_failure(
        &["train", "--devices", "2"],
        "alexnet has no two-device layout",
    );
    assert_clean_failure(
        &["peak", "--devices", "2"],
        "this command runs on one device",
    );
}

#[test]
fn bad_files_fail_cleanly_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let (ok, _, stderr) = convnet(&["init", "--seed", "5", "--out", &d("w.safetensors")]);
    assert!(ok, "{stderr}");

    // A header length that runs past the end of the file, and a valid but empty header.
    std::fs::write(d("garbage.safetensors"), b"\x08\0\0\0\0\0\0\0{}").unwrap();
    std::fs::write(d("empty.safetensors"), b"\x02\0\0\0\0\0\0\0{}").unwrap();
    std::fs::write(d("garbage.npy"), b"not numpy").unwrap();
    let image = vec![0.1; 3 * 224 * 224];
    convnet_wgpu::npy::write(Path::new(&d("x.npy")), &[1, 3, 224, 224], &image).unwrap();

    let dir_path = dir.path().display().to_string();
    let cases = [
        (d("missing.safetensors"), d("x.npy"), "missing.safetensors"),
        (
            d("garbage.safetensors"),
            d("x.npy"),
            "not a valid safetensors file",
        ),
        (
            d("empty.safetensors"),
            d("x.npy"),
            "'conv1.weight' is missing",
        ),
        (d("w.safetensors"), d("garbage.npy"), "bad magic"),
        (d("w.safetensors"), dir_path, "is a directory"),
    ];
    let out = d("y.npy");
    for (weights, input, expected) in &cases {
        let args = [
            "run",
            "--weights",
            weights,
            "--input",
            input,
            "--output",
            &out,
        ];
        assert_clean_failure(&args, expected);
        assert!(!Path::new(&out).exists(), "{args:?} left {out}");
    }
    assert_clean_failure(
        &["init", "--out", &d("no/such/dir/w.safetensors")],
        "the directory does not exist",
    );
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn run_writes_logits() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let (ok, _, stderr) = convnet(&["init", "--out", &d("w.safetensors")]);
    assert!(ok, "{stderr}");
    convnet_wgpu::npy::write(
        Path::new(&d("x.npy")),
        &[1, 3, 224, 224],
        &vec![0.1; 3 * 224 * 224],
    )
    .unwrap();
    let (ok, stdout, stderr) = convnet(&[
        "run",
        "--weights",
        &d("w.safetensors"),
        "--input",
        &d("x.npy"),
        "--output",
        &d("y.npy"),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("adapter:"), "{stdout}");
    let logits = convnet_wgpu::npy::read(Path::new(&d("y.npy"))).unwrap();
    assert_eq!(logits.shape, vec![1, 1000]);
    assert!(logits.data.iter().all(|v| v.is_finite()) && logits.data.iter().any(|&v| v != 0.0));
}

/// `--precision f16` where the default adapter has shader-f16: `check` passes on a network
/// with batch norms, `run` writes logits near the f32 run's, and what trains is refused with one
/// line. Where it has not (wgpu's GL backend), every use is refused with one line naming the
/// feature.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn precision_f16_checks_runs_and_trains_on_one_device() {
    let small = [
        "--model",
        "resnet18",
        "--input-size",
        "64",
        "--num-classes",
        "10",
    ];
    let check: Vec<&str> = ["check", "--precision", "f16", "--batch", "2"]
        .iter()
        .chain(&small)
        .copied()
        .collect();
    let (ok, stdout, stderr) = convnet(&check);
    if !ok && stderr.contains("shader-f16") {
        assert_clean_failure(&check, "shader-f16");
        eprintln!("the default adapter has no shader-f16: {stderr}");
        return;
    }
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("check passed"), "{stdout}");
    assert!(stdout.contains("f16 inputs (tolerance 2e-3)"), "{stdout}");
    assert!(
        stdout.contains("(f32) against the f64 backward pass through the GPU's f16 activations"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let (weights, images) = (d("w.safetensors"), d("x.npy"));
    let init: Vec<&str> = ["init", "--out", &weights]
        .iter()
        .chain(&small)
        .copied()
        .collect();
    let (ok, _, stderr) = convnet(&init);
    assert!(ok, "{stderr}");
    let input = common::random(2 * 3 * 64 * 64, 5);
    convnet_wgpu::npy::write(Path::new(&images), &[2, 3, 64, 64], &input).unwrap();
    let mut logits = Vec::new();
    for precision in ["f32", "f16"] {
        let out = d(&format!("y_{precision}.npy"));
        let run: Vec<&str> = [
            "run",
            "--weights",
            &weights,
            "--input",
            &images,
            "--output",
            &out,
            "--precision",
            precision,
        ]
        .iter()
        .chain(&small)
        .copied()
        .collect();
        let (ok, stdout, stderr) = convnet(&run);
        assert!(ok, "{stdout}{stderr}");
        logits.push(convnet_wgpu::npy::read(Path::new(&out)).unwrap().data);
    }
    // f16's rounding, compounded over 18 layers (docs/results.md#half-precision-storage).
    let drift = common::relative_error(&logits[1], &logits[0]);
    assert!(
        drift > 0.0 && drift < 1e-2,
        "f16 logits {drift:e} from f32's"
    );

    // Mixed precision trains on one device; the data-parallel replicas keep f32.
    let train: Vec<&str> = [
        "train",
        "--precision",
        "f16",
        "--steps",
        "2",
        "--batch",
        "2",
    ]
    .iter()
    .chain(&small)
    .copied()
    .collect();
    let (ok, stdout, stderr) = convnet(&train);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("step 1, loss = "), "{stdout}");
    let data_parallel: Vec<&str> = train
        .iter()
        .chain(&["--parallel", "data", "--devices", "2"])
        .copied()
        .collect();
    assert_clean_failure(&data_parallel, "data-parallel replicas keep f32");
    assert_clean_failure(&["tune", "--precision", "f16"], "drop --precision f16");
    let grads = d("g.safetensors");
    let gradients = [
        "run",
        "--weights",
        &weights,
        "--input",
        &images,
        "--grads",
        &grads,
        "--precision",
        "f16",
    ];
    let gradients: Vec<&str> = gradients.iter().chain(&small).copied().collect();
    let (ok, stdout, stderr) = convnet(&gradients);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("gradients of l2_loss"), "{stdout}");
    assert!(Path::new(&grads).exists());
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn run_writes_gradients_and_train_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let (ok, _, stderr) = convnet(&["init", "--out", &d("w.safetensors")]);
    assert!(ok, "{stderr}");
    let image =
        convnet_wgpu::weights::random_input(&convnet_wgpu::model::alexnet().plan(1).unwrap(), 3);
    convnet_wgpu::npy::write(Path::new(&d("x.npy")), &[1, 3, 224, 224], &image).unwrap();

    // An unwritable gradients path fails before any work and leaves no logits behind.
    let (weights, input, output) = (d("w.safetensors"), d("x.npy"), d("y.npy"));
    let (bad_grads, grads_path) = (d("no/dir/g.safetensors"), d("g.safetensors"));
    let run = |grads: &str| {
        let args = [
            "run",
            "--weights",
            &weights,
            "--input",
            &input,
            "--output",
            &output,
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend(["--grads".to_string(), grads.to_string()]);
        args
    };
    assert_clean_failure(&run(&bad_grads), "the directory does not exist");
    assert!(!Path::new(&output).exists());

    let good = run(&grads_path);
    let (ok, stdout, stderr) = convnet(&good);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("gradients of l2_loss"), "{stdout}");
    let network = convnet_wgpu::model::alexnet();
    // The gradients file has exactly the weights' names and shapes.
    let grads =
        convnet_wgpu::weights::Weights::load(Path::new(&d("g.safetensors")), &network).unwrap();
    assert!(grads.iter().all(|(_, t)| t.data.iter().any(|&v| v != 0.0)));

    let (ok, stdout, stderr) = convnet(&["train", "--steps", "11", "--batch", "1"]);
    assert!(ok, "{stderr}");
    let losses: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.split("loss = ").nth(1))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 2, "{stdout}");
    assert!(losses[1] < losses[0], "{stdout}");
    assert_clean_failure(&["train", "--lr=0"], "--lr must be positive");
}

/// A safetensors file from a raw JSON header and `data_len` bytes of data.
fn raw_safetensors(header: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    bytes
}

/// A `.npy` file from a raw header dict and `data_len` bytes of data.
fn raw_npy(dict: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    bytes
}

#[test]
fn hostile_files_fail_cleanly_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let (ok, _, stderr) = convnet(&["init", "--out", &d("w.safetensors")]);
    assert!(ok, "{stderr}");
    let image = vec![0.5f32; 3 * 224 * 224];
    convnet_wgpu::npy::write(Path::new(&d("x.npy")), &[1, 3, 224, 224], &image).unwrap();
    let valid = std::fs::read(d("w.safetensors")).unwrap();

    let t = r#""dtype":"F32","shape":[2]"#;
    let weights_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            valid[..valid.len() - 1000].to_vec(),
            "not a valid safetensors file",
        ),
        ("empty", Vec::new(), "not a valid safetensors file"),
        (
            "header_longer_than_file",
            {
                let mut b = valid[..64].to_vec();
                b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
                b
            },
            "not a valid safetensors file",
        ),
        (
            "offsets_past_the_end",
            raw_safetensors(&format!(r#"{{"a":{{{t},"data_offsets":[0,4000]}}}}"#), 8),
            "not a valid safetensors file",
        ),
        (
            "overlapping",
            raw_safetensors(
                &format!(
                    r#"{{"a":{{{t},"data_offsets":[0,8]}},"b":{{{t},"data_offsets":[0,8]}}}}"#
                ),
                8,
            ),
            "not a valid safetensors file",
        ),
        (
            "bad_json",
            raw_safetensors("{not json", 0),
            "not a valid safetensors file",
        ),
        (
            "absurd_shape",
            raw_safetensors(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
                8,
            ),
            "not a valid safetensors file",
        ),
        (
            "foreign_tensor",
            raw_safetensors(&format!(r#"{{"a":{{{t},"data_offsets":[0,8]}}}}"#), 8),
            "holds tensor \"a\"",
        ),
    ];
    let out = d("y.npy");
    for (name, bytes, expected) in &weights_cases {
        let path = d(&format!("{name}.safetensors"));
        std::fs::write(&path, bytes).unwrap();
        let args = [
            "run",
            "--weights",
            &path,
            "--input",
            &d("x.npy"),
            "--output",
            &out,
        ];
        assert_clean_failure(&args, expected);
        assert_clean_failure(&args, &path);
        assert!(!Path::new(&out).exists(), "{name} left {out}");
    }

    let header =
        |shape: &str| format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    let mut nan_image = image.clone();
    nan_image[7] = f32::NAN;
    let input_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "fortran",
            raw_npy(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 3, 224, 224), }",
                602112,
            ),
            "Fortran",
        ),
        (
            "big_endian",
            raw_npy(
                "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 3, 224, 224), }",
                602112,
            ),
            "big-endian",
        ),
        (
            "float64",
            raw_npy(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 3, 224, 224), }",
                1204224,
            ),
            "not f32",
        ),
        (
            "zero_batch",
            raw_npy(&header("(0, 3, 224, 224)"), 0),
            "N >= 1",
        ),
        (
            "absurd",
            raw_npy(&header("(100000000000, 3, 224, 224)"), 16),
            "needs",
        ),
        (
            "overflowing",
            raw_npy(&header("(18446744073709551615, 2)"), 16),
            "absurdly large",
        ),
        (
            "truncated",
            raw_npy(&header("(1, 3, 224, 224)"), 1000),
            "needs 602112 bytes",
        ),
        (
            "nan",
            convnet_wgpu::npy::encode(&[1, 3, 224, 224], &nan_image),
            "NaN or infinite",
        ),
    ];
    for (name, bytes, expected) in &input_cases {
        let path = d(&format!("{name}.npy"));
        std::fs::write(&path, bytes).unwrap();
        let args = [
            "run",
            "--weights",
            &d("w.safetensors"),
            "--input",
            &path,
            "--output",
            &out,
        ];
        assert_clean_failure(&args, expected);
        assert_clean_failure(&args, &path);
        assert!(!Path::new(&out).exists(), "{name} left {out}");
    }

    // Refused before any adapter is opened.
    for (output, expected) in [
        (d("missing/y.npy"), "the directory does not exist"),
        (d(""), "is a directory"),
    ] {
        let args = [
            "run",
            "--weights",
            &d("w.safetensors"),
            "--input",
            &d("x.npy"),
            "--output",
            &output,
        ];
        assert_clean_failure(&args, expected);
    }
}

/// An output directory that exists but takes no files is only found out when the logits are
/// written, after the run.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn an_output_that_cannot_be_created_fails_cleanly_after_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let (ok, _, stderr) = convnet(&["init", "--out", &d("w.safetensors")]);
    assert!(ok, "{stderr}");
    let image = vec![0.5f32; 3 * 224 * 224];
    convnet_wgpu::npy::write(Path::new(&d("x.npy")), &[1, 3, 224, 224], &image).unwrap();
    let args = [
        "run",
        "--weights",
        &d("w.safetensors"),
        "--input",
        &d("x.npy"),
        "--output",
        "/proc/convnet-test-y.npy",
    ];
    assert_clean_failure(&args, "cannot create a file there");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn the_watchdog_ends_a_run_without_progress() {
    let args = [
        "bench",
        "--batch",
        "1",
        "--batches",
        "1",
        "--burn-in",
        "0",
        "--timeout",
        "0.001",
    ];
    assert_clean_failure(&args, "no progress for 0.001 s at step 0");
    assert_clean_failure(
        &["bench", "--timeout", "0"],
        "--timeout must be a positive number",
    );
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn bench_profiles_every_layer_of_both_passes() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json").display().to_string();
    let args = [
        "bench",
        "--batch",
        "1",
        "--batches",
        "1",
        "--burn-in",
        "0",
        "--profile",
        "--json",
        &json,
    ];
    let (ok, stdout, stderr) = convnet(&args);
    assert!(ok, "{stderr}");
    for pass in ["forward", "backward"] {
        assert!(
            stdout.contains(&format!("profile of the {pass} pass")),
            "{stdout}"
        );
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let profiles = doc["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 2);
    for profile in profiles {
        let layers = profile["layers"].as_array().unwrap();
        // Every AlexNet layer, each with a positive time.
        assert_eq!(layers.len(), 13, "{profile}");
        assert!(
            layers.iter().all(|l| l["seconds"].as_f64().unwrap() > 0.0),
            "{profile}"
        );
        // With GPU timestamps, each layer's time split by kernel: the kernels it names, each
        // with a positive time (its dispatches timed alone, in a run of their own).
        if profile["gpu_timestamps"] == true {
            for layer in layers {
                let split = layer["kernel_seconds"].as_array().unwrap();
                let names: Vec<&serde_json::Value> = split.iter().map(|k| &k["kernel"]).collect();
                let kernels: Vec<&serde_json::Value> =
                    layer["kernels"].as_array().unwrap().iter().collect();
                assert_eq!(names, kernels, "{layer}");
                assert!(
                    split.iter().all(|k| k["seconds"].as_f64().unwrap() > 0.0),
                    "{layer}"
                );
            }
        }
    }
    // Each layer names the kernels it ran: the forward's conv1 the convolution kernel the
    // adapter resolved (register blocks on a software adapter, tiles on most GPUs), the
    // backward's pool1 its gather (storing vec4s: its input is 56 wide).
    let resolved = doc["devices"][0]["conv_kernel"].as_str().unwrap();
    let conv_kernel = match resolved {
        "RegisterBlock" => "conv2d_forward",
        "WorkgroupTile" => "conv2d_forward_tiled",
        other => panic!("conv_kernel {other:?} is not a resolved kernel shape"),
    };
    let conv1 = &profiles[0]["layers"][0];
    assert_eq!(conv1["layer"], "conv1");
    assert!(
        conv1["kernels"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(conv_kernel)),
        "{resolved}: {conv1}"
    );
    let backward_pool1 = &profiles[1]["layers"].as_array().unwrap()[10];
    assert_eq!(backward_pool1["layer"], "pool1");
    assert_eq!(
        backward_pool1["kernels"],
        serde_json::json!(["max_pool_backward_by_four"])
    );
    assert_clean_failure(
        &["bench", "--profile", "--devices", "2"],
        "--profile times one device",
    );
}

/// `tune` measures AlexNet's five convolutions and writes a choice per shape and pass; `bench`
/// then runs each convolution as the cache says (even against the heuristic), a flag still
/// forces its choice over the cache, and a corrupt cache is ignored with a warning.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn tune_writes_choices_that_bench_follows() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache").join("tune.json");
    let cache_arg = cache.display().to_string();
    let small = ["--input-size", "99", "--batch", "2"];
    let report = dir.path().join("tune-report.json").display().to_string();
    let tune = [
        &["tune", "--tune-cache", &cache_arg, "--json", &report][..],
        &small,
    ]
    .concat();
    let (ok, stdout, stderr) = convnet(&tune);
    assert!(ok, "{stderr}");
    // The report: every layer shape with its measured candidates, each with a positive forward
    // time, and a winner for each pass.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let shapes = report["shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), 5, "{report}");
    for shape in shapes {
        let candidates = shape["candidates"].as_array().unwrap();
        assert!(!candidates.is_empty(), "{shape}");
        assert!(
            candidates
                .iter()
                .all(|c| c["forward_s"].as_f64().unwrap() > 0.0),
            "{shape}"
        );
        assert!(
            shape["inference"].is_object() && shape["training"].is_object(),
            "{shape}"
        );
    }
    // The fully connected layers: each shape's forward kernels timed and checked, one winner.
    let linear = report["linear"].as_array().unwrap();
    assert_eq!(linear.len(), 3, "{report}");
    for shape in linear {
        let candidates = shape["candidates"].as_array().unwrap();
        assert!(candidates.len() >= 2, "{shape}");
        assert!(
            (candidates.iter())
                .all(|c| c["forward_s"].as_f64().unwrap() > 0.0 && c["rejected"].is_null()),
            "{shape}"
        );
        assert!(!shape["fastest"].is_null(), "{shape}");
    }
    assert!(
        stdout.contains(
            "wrote 10 choices for 5 convolution shapes and 3 for 3 fully connected shapes"
        ),
        "{stdout}"
    );
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    // fc1 made the small-batch kernel split in 3 (which no heuristic takes on any adapter).
    let fc = doc["linear"].as_array_mut().unwrap();
    assert_eq!(fc.len(), 3, "{doc}");
    let fc1 = (fc.iter_mut())
        .find(|e| e["layer"] == "linear batch 2 in 1024 out 4096")
        .unwrap_or_else(|| panic!("no fc1 entry"));
    fc1["kernel"] = serde_json::json!({"small-batch": {"chunks": 3}});
    let entries = doc["entries"].as_array_mut().unwrap();
    assert_eq!(entries.len(), 10, "{doc}");
    // Every 3x3 layer (conv3-5, 192 to 384 channels, where the heuristic takes Winograd) made
    // direct, every other layer's kernel made register blocks.
    let mut three_by_three = 0;
    for entry in entries.iter_mut() {
        let layer = entry["layer"].as_str().unwrap().to_string();
        entry["choice"]["kernel"] = "register-block".into();
        if layer.contains("kernel 3x3") {
            entry["choice"]["algorithm"] = "direct".into();
            three_by_three += 1;
        }
    }
    assert_eq!(three_by_three, 6);
    std::fs::write(&cache, serde_json::to_string(&doc).unwrap()).unwrap();

    let json = dir.path().join("bench.json").display().to_string();
    let bench = [
        &[
            "bench",
            "--pass",
            "forward-backward",
            "--batches",
            "1",
            "--burn-in",
            "0",
            "--profile",
            "--json",
            &json,
            "--tune-cache",
            &cache_arg,
        ][..],
        &small,
    ]
    .concat();
    let conv3 = |extra: &[&str]| -> (String, serde_json::Value) {
        let (ok, stdout, stderr) = convnet(&[&bench[..], extra].concat());
        assert!(ok, "{stderr}");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let layers = doc["profiles"][0]["layers"].as_array().unwrap();
        let conv3 = layers.iter().find(|l| l["layer"] == "conv3").unwrap();
        (stdout + &stderr, conv3.clone())
    };
    let (output, layer) = conv3(&[]);
    assert!(
        output.contains("10 measured convolution choices and 3 fully connected"),
        "{output}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["devices"][0]["tuned_choices"], 10, "{doc}");
    assert_eq!(doc["devices"][0]["tuned_linear_choices"], 3, "{doc}");
    // The fully connected choice is the forward's: fc1's forward profile runs the split.
    let forward = [
        &[
            "bench",
            "--pass",
            "forward",
            "--batches",
            "1",
            "--burn-in",
            "0",
            "--profile",
            "--json",
            &json,
            "--tune-cache",
            &cache_arg,
        ][..],
        &small,
    ]
    .concat();
    let (ok, _, stderr) = convnet(&forward);
    assert!(ok, "{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let layers = doc["profiles"][0]["layers"].as_array().unwrap();
    let fc1 = layers.iter().find(|l| l["layer"] == "fc1").unwrap();
    assert_eq!(fc1["choice"], "small-batch split-k 3, tuned", "{fc1}");
    assert!(
        fc1["kernels"].to_string().contains("gemm_split_k_reduce"),
        "{fc1}"
    );
    assert_eq!(layer["choice"], "direct register-block, tuned", "{layer}");
    let kernels = layer["kernels"].to_string();
    assert!(!kernels.contains("winograd"), "{layer}");
    let (_, layer) = conv3(&["--conv-algorithm", "winograd2"]);
    assert_eq!(
        layer["choice"], "winograd2 register-block, tuned",
        "{layer}"
    );
    assert!(
        layer["kernels"].to_string().contains("winograd_input"),
        "{layer}"
    );

    std::fs::write(&cache, "{ not a cache").unwrap();
    let (output, layer) = conv3(&[]);
    assert!(
        output.contains("warning:")
            && output.contains("not a tune cache")
            && output.contains("ignored"),
        "{output}"
    );
    assert!(!output.contains("measured convolution choices"), "{output}");
    // The heuristic's Winograd, on whichever kernel shape the adapter's kind takes.
    let choice = layer["choice"].as_str().unwrap();
    assert!(
        choice.starts_with("winograd2 ") && choice.ends_with(", heuristic"),
        "{layer}"
    );
    assert_clean_failure(
        &["tune", "--tune-cache", "none"],
        "give --tune-cache a file",
    );
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn every_network_trains_from_the_command_line_with_labels() {
    // ResNet-18 with 4 classes on 2 images: cross-entropy falls under SGD; the labels' mistakes
    // are one-line errors; bench times a training step with --update.
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (x, y) = (path("x.npy"), path("y.npy"));
    let images: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| (i % 17) as f32 * 0.1 - 0.8)
        .collect();
    convnet_wgpu::npy::write(std::path::Path::new(&x), &[2, 3, 32, 32], &images).unwrap();
    let write_labels = |name: &str, labels: &[i64]| {
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let mut header = format!(
            "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
            labels.len()
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(labels.iter().flat_map(|l| l.to_le_bytes()));
        std::fs::write(path(name), bytes).unwrap();
        path(name)
    };
    write_labels("y.npy", &[1, 3]);
    let net = [
        "--model",
        "resnet18",
        "--num-classes",
        "4",
        "--input-size",
        "32",
    ];
    let train = [
        &[
            "train",
            "--steps",
            "12",
            "--lr",
            "0.05",
            "--momentum",
            "0.9",
        ][..],
        &net,
    ]
    .concat();
    let with = |extra: &[&str]| -> Vec<String> {
        train.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let (ok, stdout, stderr) = convnet(&with(&["--input", &x, "--labels", &y]));
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("loss cross-entropy"), "{stdout}");
    let losses: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.split("loss = ").nth(1))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert!(
        losses.len() >= 2 && losses.last() < losses.first(),
        "{stdout}"
    );

    let out_of_range = write_labels("bad.npy", &[1, 4]);
    assert_clean_failure(
        &with(&["--input", &x, "--labels", &out_of_range]),
        "label 4 of image 1 is not one of the 4 classes",
    );
    let short = write_labels("short.npy", &[1]);
    assert_clean_failure(
        &with(&["--input", &x, "--labels", &short]),
        "1 labels for 2 images",
    );
    assert_clean_failure(&with(&["--labels", &y]), "add --input");
    assert_clean_failure(
        &with(&["--input", &x, "--loss", "cross-entropy"]),
        "needs --labels",
    );
    assert_clean_failure(&with(&["--input", &x, "--labels", &x]), "int64");
    // A rate that blows the weights up stops at the step it happens, naming a tensor.
    // (With batch norms the network is scale-invariant: l2_loss of the logits, not cross-entropy,
    // overflows when the head's weights do.)
    let mut blow_up = with(&[]);
    let lr = blow_up.iter().position(|a| a == "--lr").unwrap();
    blow_up[lr + 1] = "1e30".into();
    assert_clean_failure(&blow_up, "first non-finite");

    let bench = [&["bench", "--batch", "2", "--update"][..], &net].concat();
    let (ok, stdout, stderr) = convnet(&bench);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("Training_step across"), "{stdout}");
}

/// A small PNG whose pixels vary in both directions.
fn write_png(path: &Path, width: u32, height: u32) {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 9) as u8, (y * 7) as u8, ((x + y) * 5) as u8])
    })
    .save(path)
    .unwrap();
}

/// VGG-`depth`'s feature layers (to conv5_1) with torchvision's initialisation, as a weights
/// file without the classifier.
fn write_feature_weights(path: &Path, depth: usize, deepest: &str) {
    use convnet_wgpu::style;
    let dims = convnet_wgpu::model::Dims {
        channels: 3,
        height: 32,
        width: 32,
    };
    let net = style::feature_network(depth, style::Pooling::Max, dims, &[deepest.into()]).unwrap();
    convnet_wgpu::weights::Weights::init(&net, 7)
        .unwrap()
        .save(path)
        .unwrap();
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn style_writes_the_image_its_frames_its_gradient_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content.png");
    let style_image = dir.path().join("style.png");
    write_png(&content, 40, 30);
    write_png(&style_image, 25, 25);
    let weights = dir.path().join("vgg11.safetensors");
    write_feature_weights(&weights, 11, "features.18");
    let out = dir.path().join("out.png");
    let frames = dir.path().join("frames");
    let gradient = dir.path().join("gradient.npy");
    let (ok, stdout, stderr) = convnet(&[
        "style".as_ref(),
        "--model".as_ref(),
        "vgg11".as_ref(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--content".as_ref(),
        content.as_os_str(),
        "--style".as_ref(),
        style_image.as_os_str(),
        "--size".as_ref(),
        "36".as_ref(),
        "--steps".as_ref(),
        "4".as_ref(),
        "--every".as_ref(),
        "2".as_ref(),
        "--pool".as_ref(),
        "avg".as_ref(),
        "--tv-weight".as_ref(),
        "0.01".as_ref(),
        "--init".as_ref(),
        "noise".as_ref(),
        "--frames".as_ref(),
        frames.as_os_str(),
        "--gradient-out".as_ref(),
        gradient.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(ok, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let steps = doc["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    let total = |i: usize| steps[i]["total"].as_f64().unwrap();
    assert!(total(3) < total(0), "{stdout}");
    assert!(steps[0]["tv"].as_f64().unwrap() > 0.0);
    let result = image::open(&out).unwrap();
    assert_eq!((result.width(), result.height()), (36, 27));
    for step in [2, 4] {
        assert!(frames.join(format!("step_{step:05}.png")).exists());
    }
    let grad = convnet_wgpu::npy::read(&gradient).unwrap();
    assert_eq!(grad.shape, [3, 27, 36]);
    assert!(grad.data.iter().any(|&g| g != 0.0));
}

#[test]
fn style_refuses_bad_images_layers_weights_and_outputs_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.png");
    write_png(&good, 40, 30);
    let text = dir.path().join("text.png");
    std::fs::write(&text, "not an image").unwrap();
    let clear = dir.path().join("clear.png");
    image::RgbaImage::from_pixel(8, 8, image::Rgba([1, 2, 3, 0]))
        .save(&clear)
        .unwrap();
    let shallow = dir.path().join("shallow.safetensors");
    write_feature_weights(&shallow, 19, "features.0");
    let out = dir.path().join("out.png");
    let style = |content: &Path, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["style", "--content"].map(String::from).to_vec();
        args.push(content.display().to_string());
        args.extend(["--style".into(), good.display().to_string()]);
        args.extend(["--out".into(), out.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    assert_clean_failure(&style(&text, &[]), "not an image");
    assert_clean_failure(&style(&clear, &[]), "transparent pixels");
    assert_clean_failure(
        &style(&good, &["--size", "12"]),
        "too small for the deepest",
    );
    assert_clean_failure(&style(&good, &["--model", "resnet50"]), "runs on VGG");
    assert_clean_failure(
        &style(&good, &["--style-layers", "conv1_1,conv9_1"]),
        "conv9_1 is not one of vgg19's convolutions",
    );
    let weights = shallow.display().to_string();
    assert_clean_failure(
        &style(&good, &["--weights", &weights]),
        "tensor 'features.2.weight' is missing",
    );
    assert_clean_failure(&style(&good, &["--lr=-1"]), "--lr must be");
    let mut bmp = style(&good, &[]);
    let at = bmp.iter().position(|a| a == "--out").unwrap() + 1;
    bmp[at] = dir.path().join("out.bmp").display().to_string();
    assert_clean_failure(&bmp, "write .png, .jpg or .npy");
    bmp[at] = dir.path().join("missing/out.png").display().to_string();
    assert_clean_failure(&bmp, "missing");
    assert!(!out.exists(), "nothing written");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn make_dataset_then_eval_scores_a_network_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shapes");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let images = data.join("images.npy").display().to_string();
    let (ok, _, stderr) = convnet(&[
        "make-dataset",
        "shapes",
        "--classes",
        "3",
        "--size",
        "16",
        "--count",
        "7",
        "--out",
        &data.display().to_string(),
    ]);
    assert!(ok, "{stderr}");
    let labels = convnet_wgpu::npy::read_labels(&data.join("labels.npy")).unwrap();
    assert_eq!(labels, [0, 1, 2, 0, 1, 2, 0]);
    assert_eq!(
        convnet_wgpu::npy::read(&data.join("images.npy"))
            .unwrap()
            .shape,
        [7, 3, 16, 16]
    );

    // The network's own logits (`run`, all 7 at once) give the labels it gets right by
    // construction: eval at batch 3 (the last batch padded) must score them 100%, and its loss
    // must be the cross-entropy of those logits.
    let model = [
        "--model",
        "resnet18",
        "--num-classes",
        "5",
        "--input-size",
        "16",
    ];
    let mut init = vec!["init"];
    init.extend(model);
    let weights = path("w.safetensors");
    init.extend(["--out", &weights]);
    assert!(convnet(&init).0);
    let logits_path = path("logits.npy");
    let mut run = vec!["run"];
    run.extend(model);
    run.extend([
        "--weights",
        &weights,
        "--input",
        &images,
        "--output",
        &logits_path,
    ]);
    let (ok, _, stderr) = convnet(&run);
    assert!(ok, "{stderr}");
    let logits = convnet_wgpu::npy::read(std::path::Path::new(&logits_path)).unwrap();
    let argmax: Vec<usize> = (logits.data.chunks(5))
        .map(|row| (0..5).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap())
        .collect();
    let own = path("own.npy");
    convnet_wgpu::npy::write_labels(std::path::Path::new(&own), &argmax).unwrap();
    let mut eval = vec!["eval"];
    eval.extend(model);
    eval.extend([
        "--weights",
        &weights,
        "--input",
        &images,
        "--labels",
        &own,
        "--batch",
        "3",
        "--json",
    ]);
    let (ok, stdout, stderr) = convnet(&eval);
    assert!(ok, "{stderr}");
    let scores: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(scores["images"], 7);
    assert_eq!(scores["top1"], 1.0);
    assert_eq!(scores["top5"], 1.0);
    let (expected, _, _) =
        convnet_wgpu::eval::classification_scores(&logits.data, &argmax, 5).unwrap();
    let loss = scores["loss"].as_f64().unwrap();
    assert!(
        (loss - expected).abs() <= 1e-5 * expected.max(1.0),
        "{loss} vs {expected}"
    );

    // Labels that do not fit the images or the classes: one line, exit 1.
    let seven = data.join("labels.npy").display().to_string();
    let short = path("short.npy");
    convnet_wgpu::npy::write_labels(std::path::Path::new(&short), &[0, 1]).unwrap();
    let far = path("far.npy");
    convnet_wgpu::npy::write_labels(std::path::Path::new(&far), &[0, 1, 2, 3, 4, 5, 6]).unwrap();
    for (labels, expected) in [
        (&short, "2 labels for the 7 images"),
        (
            &far,
            "label 5 of image 5 is not one of the network's 5 classes",
        ),
    ] {
        let mut args = vec!["eval"];
        args.extend(model);
        args.extend([
            "--weights",
            &weights,
            "--input",
            &images,
            "--labels",
            labels,
        ]);
        assert_clean_failure(&args, expected);
    }
    let mut fine = vec!["eval"];
    fine.extend(model);
    fine.extend([
        "--weights",
        &weights,
        "--input",
        &images,
        "--labels",
        &seven,
    ]);
    let (ok, stdout, stderr) = convnet(&fine);
    assert!(ok && stdout.contains("7 images: loss"), "{stdout}{stderr}");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn run_and_train_split_the_two_gpu_alexnet_over_two_devices() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (weights, input) = (path("w.safetensors"), path("x.npy"));
    assert!(convnet(&["init", "--model", "alexnet-2gpu", "--out", &weights]).0);
    let images: Vec<f32> = (0..2 * 3 * 224 * 224)
        .map(|i| ((i % 97) as f32 - 48.0) / 480.0)
        .collect();
    convnet_wgpu::npy::write(std::path::Path::new(&input), &[2, 3, 224, 224], &images).unwrap();
    let split = ["--model", "alexnet-2gpu", "--devices", "2"];
    let mut run = vec!["run"];
    run.extend(split);
    let (grads, logits) = (path("g.safetensors"), path("y.npy"));
    run.extend([
        "--weights",
        &weights,
        "--input",
        &input,
        "--grads",
        &grads,
        "--output",
        &logits,
    ]);
    let (ok, stdout, stderr) = convnet(&run);
    assert!(
        ok && stdout.contains("l2_loss(logits) = "),
        "{stdout}{stderr}"
    );
    assert!(std::path::Path::new(&grads).exists() && std::path::Path::new(&logits).exists());

    let out = path("trained.safetensors");
    let mut train = vec!["train"];
    train.extend(split);
    train.extend(["--steps", "2", "--out", &out]);
    let (ok, stdout, stderr) = convnet(&train);
    assert!(ok, "{stderr}");
    let losses: Vec<f64> = (stdout.lines())
        .filter_map(|l| l.split("loss = ").nth(1))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 2, "{stdout}");
    assert!(losses[1] < losses[0], "the loss falls: {losses:?}");
    assert!(std::path::Path::new(&out).exists());

    let labels = path("labels.npy");
    convnet_wgpu::npy::write_labels(std::path::Path::new(&labels), &[1, 2]).unwrap();
    let mut with_labels = run.clone();
    with_labels.extend(["--labels", &labels]);
    assert_clean_failure(
        &with_labels,
        "on two devices the loss is the seed's l2_loss",
    );
    let single = path("single.safetensors");
    assert!(convnet(&["init", "--model", "alexnet", "--out", &single]).0);
    let mut one_tower = vec!["run", "--model", "alexnet", "--devices", "2"];
    one_tower.extend(["--weights", &single, "--input", &input]);
    assert_clean_failure(&one_tower, "alexnet has no two-device layout");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn train_on_a_data_set_checkpoints_resumes_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    // 30 images of 16x16 over 4 classes, as float32 and as 8-bit pixels.
    let make_shapes = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec!["make-dataset", "shapes", "--classes", "4", "--size", "16"];
        args.extend(["--count", "30"]);
        args.extend(extra);
        let out_text = out.display().to_string();
        args.extend(["--out", &out_text]);
        let (ok, _, stderr) = convnet(&args);
        assert!(ok, "{stderr}");
        out
    };
    let data = make_shapes("shapes", &[]);
    let images = data.join("images.npy").display().to_string();
    let labels = data.join("labels.npy").display().to_string();
    let (weights, order, curve) = (path("w.safetensors"), path("order.npy"), path("curve.svg"));
    let base = [
        "train",
        "--model",
        "resnet18",
        "--num-classes",
        "4",
        "--input-size",
        "16",
        "--batch",
        "8",
        "--input",
        &images,
        "--labels",
        &labels,
        "--val-split",
        "0.2",
        "--lr",
        "0.05",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    // 24 images train (3 steps of 8 per epoch), 6 held out.
    let (ok, stdout, stderr) = convnet(&with(&[
        "--epochs",
        "2",
        "--json",
        "--out",
        &weights,
        "--order-out",
        &order,
        "--curve",
        &curve,
    ]));
    assert!(ok, "{stderr}");
    let run: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(run["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(run["steps"].as_array().unwrap().len(), 6);
    assert_eq!(run["settings"]["training_images"], 24);
    assert!(run["epochs"][1]["validation"]["top1"].as_f64().is_some());
    let orders = convnet_wgpu::npy::decode_labels(&std::fs::read(&order).unwrap());
    assert!(orders.is_err(), "the orders are two-dimensional");
    assert!(std::fs::read_to_string(&curve).unwrap().starts_with("<svg"));
    let checkpoint = path("w.checkpoint.safetensors");
    assert!(Path::new(&checkpoint).exists());

    // One epoch, then the second resumed from its checkpoint (--force: the run was started
    // for one epoch): the weights file is the two-epoch run's, byte for byte.
    let (first, first_checkpoint) = (
        path("first.safetensors"),
        path("first.checkpoint.safetensors"),
    );
    let (ok, _, stderr) = convnet(&with(&["--epochs", "1", "--out", &first]));
    assert!(ok, "{stderr}");
    let resumed = path("resumed.safetensors");
    let (ok, _, stderr) = convnet(&with(&[
        "--epochs",
        "2",
        "--resume",
        &first_checkpoint,
        "--force",
        "--out",
        &resumed,
    ]));
    assert!(ok, "{stderr}");
    assert!(
        std::fs::read(&resumed).unwrap() == std::fs::read(&weights).unwrap(),
        "the resumed run's weights differ from the straight run's"
    );

    // A finished run, hyperparameters that differ, another model, a damaged file.
    assert_clean_failure(
        &with(&["--epochs", "2", "--resume", &checkpoint]),
        "already finished its 2 epochs",
    );
    let mut other_rate = with(&["--epochs", "3", "--resume", &checkpoint]);
    other_rate[16] = "0.1".into(); // --lr
    assert_clean_failure(&other_rate, "learning_rate: 0.05");
    let mut other_model = with(&["--epochs", "3", "--resume", &checkpoint]);
    other_model[4] = "5".into(); // --num-classes
    assert_clean_failure(&other_model, "another model");
    // An f32 run resumed in f16 (refused for the setting, or by an adapter without f16).
    let mut other_precision = with(&["--epochs", "3", "--resume", &checkpoint]);
    other_precision.extend(["--precision".to_string(), "f16".to_string()]);
    assert_clean_failure(&other_precision, "precision");
    let damaged = path("damaged.safetensors");
    let mut bytes = std::fs::read(&checkpoint).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&damaged, bytes).unwrap();
    assert_clean_failure(&with(&["--epochs", "3", "--resume", &damaged]), "corrupted");

    // Labels of the wrong length, range or type; images of another size.
    let short = path("short.npy");
    convnet_wgpu::npy::write_labels(Path::new(&short), &[0, 1]).unwrap();
    let far = path("far.npy");
    let mut far_labels = vec![0; 30];
    far_labels[7] = 4;
    convnet_wgpu::npy::write_labels(Path::new(&far), &far_labels).unwrap();
    let floats = path("floats.npy");
    convnet_wgpu::npy::write(Path::new(&floats), &[30], &[0.0; 30]).unwrap();
    for (bad, expected) in [
        (&short, "2 labels for the 30 images"),
        (
            &far,
            "label 4 of image 7 is not one of the network's 4 classes",
        ),
        (&floats, "save them as int64"),
    ] {
        let mut args = with(&["--epochs", "1"]);
        args[12] = bad.clone(); // --labels
        assert_clean_failure(&args, expected);
    }
    let mut other_size = with(&["--epochs", "1"]);
    other_size[6] = "20".into(); // --input-size
    assert_clean_failure(&other_size, "expects [N, 3, 20, 20]");

    // Settings that cannot work, and data-set flags without --epochs.
    for (extra, expected) in [
        (vec!["--epochs", "0"], "--epochs must be at least 1"),
        (
            vec!["--epochs", "1", "--lr-schedule", "linear"],
            "--lr-schedule",
        ),
        (
            vec!["--steps", "3"],
            "--val-split is for training on a data set",
        ),
        (
            vec!["--epochs", "1", "--devices", "2"],
            "over several devices needs --parallel data",
        ),
        (
            vec!["--epochs", "1", "--sync-batch-norm"],
            "--sync-batch-norm is for data-parallel replicas",
        ),
        // 24 training images at batch 8 over 9 replicas: a shard would be empty.
        (
            vec!["--epochs", "1", "--parallel", "data", "--devices", "9"],
            "a batch of 8 cannot be split over 9 devices",
        ),
    ] {
        assert_clean_failure(&with(&extra), expected);
    }
    // Over three replicas (8 images as 3 + 3 + 2), checkpointed as on one device (its
    // numerics are tested in tests/training_on_data.rs and tests/mpi.rs).
    let replicated = path("replicated.safetensors");
    let (ok, stdout, stderr) = convnet(&with(&[
        "--epochs",
        "1",
        "--parallel",
        "data",
        "--devices",
        "3",
        "--out",
        &replicated,
    ]));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("split over 3 devices as [3, 3, 2]"),
        "{stdout}"
    );
    assert!(Path::new(&path("replicated.checkpoint.safetensors")).exists());
    // 8-bit images, channels last, normalised on the GPU; --mean/--std only for them.
    let bytes = make_shapes("bytes", &["--uint8"]);
    let mut eight_bit = with(&[
        "--epochs",
        "1",
        "--json",
        "--mean",
        "0.3,0.3,0.3",
        "--std",
        "0.25,0.25,0.25",
    ]);
    eight_bit[10] = bytes.join("images.npy").display().to_string(); // --input
    let (ok, stdout, stderr) = convnet(&eight_bit);
    assert!(ok, "{stderr}");
    let run: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(run["settings"]["mean"][0], 0.3f32 as f64);
    let loss = run["steps"][0]["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    let mut two_means = eight_bit.clone();
    two_means[21] = "0.3,0.3".into();
    assert_clean_failure(&two_means, "one value per channel");
    assert_clean_failure(
        &with(&["--epochs", "1", "--mean", "0.5,0.5,0.5"]),
        "--mean and --std normalise 8-bit images",
    );
    let mut mixed = eight_bit.clone();
    mixed.truncate(mixed.len() - 5); // --json and the normalisation
    mixed.splice(13..15, ["--val-input".to_string(), images.clone()]);
    mixed.extend(["--val-labels".to_string(), labels.clone()]);
    assert_clean_failure(&mixed, "give both in one format");

    let mut large_batch = with(&["--epochs", "1"]);
    large_batch[8] = "99".into();
    assert_clean_failure(&large_batch, "--batch must be 1 to the 24");
    // Finite weights whose logits overflow: the loss of step 0 is not finite, and the message
    // names the first tensor that is not.
    let (ok, _, stderr) = convnet(&[
        "init",
        "--model",
        "resnet18",
        "--num-classes",
        "4",
        "--input-size",
        "16",
        "--out",
        &weights,
    ]);
    assert!(ok, "{stderr}");
    let network = convnet_wgpu::model::build(
        "resnet18",
        &convnet_wgpu::model::Options {
            num_classes: Some(4),
            input_size: Some(16),
            aux_logits: false,
        },
    )
    .unwrap();
    let mut huge = convnet_wgpu::weights::Weights::load(Path::new(&weights), &network).unwrap();
    huge.get_mut("fc.weight").unwrap().data.fill(3e38);
    huge.save(Path::new(&weights)).unwrap();
    let diverging = with(&["--epochs", "1", "--weights", &weights]);
    assert_clean_failure(
        &diverging,
        "step 1 (epoch 1, batch 1): the loss is no longer finite",
    );
    assert_clean_failure(&diverging, "first non-finite: ");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn check_judges_googlenets_auxiliary_heads_gradients() {
    let (ok, stdout, stderr) = convnet(&[
        "check",
        "--model",
        "googlenet",
        "--aux-logits",
        "--num-classes",
        "10",
        "--input-size",
        "64",
        "--batch",
        "2",
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("gradients of l2_loss(logits) (+ 0.3 x 2 auxiliary heads)"),
        "{stdout}"
    );
    for name in ["aux1.fc2.weight", "aux2.conv.conv.weight"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no gradient row for {name}:\n{stdout}"));
        assert!(row.contains(" ok "), "{row}");
        // A gradient the loss reaches is not zero.
        let max_ref: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(max_ref > 0.0, "{row}");
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn run_and_train_split_the_batch_over_replicas_with_parallel_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let model = [
        "--model",
        "alexnet",
        "--num-classes",
        "10",
        "--input-size",
        "67",
    ];
    let weights = path("w.safetensors");
    let mut init = vec!["init"];
    init.extend(model);
    init.extend(["--out", &weights]);
    assert!(convnet(&init).0);
    let network = convnet_wgpu::model::build(
        "alexnet",
        &convnet_wgpu::model::Options {
            num_classes: Some(10),
            input_size: Some(67),
            aux_logits: false,
        },
    )
    .unwrap();
    let plan = network.plan(5).unwrap();
    let images = path("x.npy");
    convnet_wgpu::npy::write(
        Path::new(&images),
        &[5, 3, 67, 67],
        &convnet_wgpu::weights::random_input(&plan, 3),
    )
    .unwrap();
    let labels = path("y.npy");
    convnet_wgpu::npy::write_labels(Path::new(&labels), &[3, 1, 4, 1, 5]).unwrap();
    // One device, then three replicas (shards of 2, 2 and 1): the whole batch's gradients.
    let mut grads = Vec::new();
    for devices in ["1", "3"] {
        let out = path(&format!("g{devices}.safetensors"));
        let mut run = vec!["run"];
        run.extend(model);
        run.extend([
            "--weights",
            &weights,
            "--input",
            &images,
            "--labels",
            &labels,
            "--grads",
            &out,
        ]);
        if devices != "1" {
            run.extend(["--parallel", "data", "--devices", devices]);
        }
        let (ok, stdout, stderr) = convnet(&run);
        assert!(ok, "{stdout}{stderr}");
        grads.push(convnet_wgpu::weights::Weights::load(Path::new(&out), &network).unwrap());
    }
    for ((name, one), (_, three)) in grads[0].iter().zip(grads[1].iter()) {
        let scale = one.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff =
            (one.data.iter().zip(&three.data)).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-5 * scale, "{name}: {diff} of {scale}");
    }
    let mut train = vec!["train"];
    train.extend(model);
    train.extend([
        "--weights",
        &weights,
        "--input",
        &images,
        "--labels",
        &labels,
        "--lr",
        "0.01",
        "--steps",
        "3",
        "--parallel",
        "data",
        "--devices",
        "2",
    ]);
    let (ok, stdout, stderr) = convnet(&train);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("replicas equal bit for bit"), "{stdout}");
    let mut forward_only = vec!["run"];
    forward_only.extend(model);
    forward_only.extend([
        "--weights",
        &weights,
        "--input",
        &images,
        "--parallel",
        "data",
        "--devices",
        "2",
    ]);
    assert_clean_failure(&forward_only, "--parallel data splits a training pass");

    // check: the all-reduced gradients of 3 replicas against each shard's and one device's.
    let mut check = vec!["check"];
    check.extend(model);
    check.extend(["--weights", &weights, "--input", &images]);
    check.extend([
        "--parallel",
        "data",
        "--devices",
        "3",
        "--all-reduce",
        "overlapped",
    ]);
    check.extend(["--bucket-mb", "1"]);
    let (ok, stdout, stderr) = convnet(&check);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("shards [2, 2, 1]"), "{stdout}");
    assert!(
        stdout.contains("bit for bit") && stdout.contains("check passed"),
        "{stdout}"
    );

    // Synchronised batch norms: ResNet-18's all-reduced gradients are one device's.
    let (ok, stdout, stderr) = convnet(&[
        "check",
        "--model",
        "resnet18",
        "--input-size",
        "32",
        "--batch",
        "5",
        "--parallel",
        "data",
        "--devices",
        "2",
        "--sync-batch-norm",
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("not compared: synchronised batch norms"),
        "{stdout}"
    );
    assert!(stdout.contains("check passed"), "{stdout}");

    // bench: the all-reduce's cost and the scaling, in text and JSON.
    let json = path("bench.json");
    let mut bench = vec!["bench"];
    bench.extend(model);
    bench.extend(["--batch", "4", "--pass", "forward-backward", "--update"]);
    bench.extend([
        "--batches",
        "1",
        "--burn-in",
        "0",
        "--json",
        &json,
        "--profile",
    ]);
    bench.extend(["--parallel", "data", "--devices", "2"]);
    let (ok, stdout, stderr) = convnet(&bench);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("Training_step across 1 steps"), "{stdout}");
    assert!(stdout.contains("all-reduce (AfterBackward"), "{stdout}");
    assert!(stdout.contains("scaling efficiency"), "{stdout}");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let parallel = &result["passes"][0]["data_parallel"];
    assert_eq!(parallel["shards"], serde_json::json!([2, 2]));
    let cost = &parallel["all_reduce"];
    // Gradients read back from and written to two replicas: 4 x 4 bytes per parameter, in the
    // packed layouts (convolution weights padded to whole tiles: a little more).
    let parameters = convnet_wgpu::model::total_parameters(&plan) as f64;
    let bytes = cost["bytes"].as_f64().unwrap() / (16.0 * parameters);
    assert!((1.0..1.01).contains(&bytes), "{bytes}: {cost}");
    for field in ["compute_s", "after_backward_s", "overlapped_s"] {
        assert!(cost[field].as_f64().unwrap() > 0.0, "{field}: {cost}");
    }
    let efficiency = parallel["one_device"]["scaling_efficiency"]
        .as_f64()
        .unwrap();
    assert!(efficiency > 0.0 && efficiency.is_finite(), "{parallel}");
    // The profile: replica 0's layers, and every bucket beside the backward pass.
    assert!(
        stdout.contains("all-reduce buckets beside the backward pass"),
        "{stdout}"
    );
    let buckets = result["buckets"].as_array().unwrap();
    let bucket_bytes: u64 = buckets.iter().map(|b| b["bytes"].as_u64().unwrap()).sum();
    assert_eq!(
        4 * bucket_bytes,
        cost["bytes"].as_u64().unwrap(),
        "{buckets:?}"
    );
    assert_eq!(buckets[0]["layers"][0], "fc3", "{buckets:?}");
}

/// A batch larger than one storage binding runs in parts along it (`gpu::MicroBatches`), chosen
/// by `run`, `train` and `bench` themselves: AlexNet at batch 10 with bindings held to 6 MiB
/// (conv1's output is 774 KB an image: two parts of 5) writes the whole batch's logits and
/// cross-entropy gradients (within 1e-5 of the unlimited run's), and `bench` times a training
/// step over the parts.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "CONVNET_SKIP_GPU_TESTS=1")]
fn a_batch_larger_than_one_binding_runs_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let weights = path("w.safetensors");
    assert!(convnet(&["init", "--model", "alexnet", "--out", &weights]).0);
    let network = convnet_wgpu::model::by_name("alexnet").unwrap();
    let plan = network.plan(10).unwrap();
    let images = path("x.npy");
    let input = convnet_wgpu::weights::random_input(&plan, 5);
    convnet_wgpu::npy::write(Path::new(&images), &[10, 3, 224, 224], &input).unwrap();
    let labels = path("y.npy");
    let classes: Vec<usize> = (0..10).map(|i| i * 97 % 1000).collect();
    convnet_wgpu::npy::write_labels(Path::new(&labels), &classes).unwrap();
    let mut grads = Vec::new();
    let mut logits = Vec::new();
    for limit in [None, Some("6")] {
        let (out, output) = (path("g.safetensors"), path("logits.npy"));
        let mut run = vec!["run", "--model", "alexnet", "--weights", &weights];
        run.extend(["--input", &images, "--labels", &labels]);
        run.extend(["--grads", &out, "--output", &output]);
        // Both runs compute every convolution alike: under 6 MiB bindings conv4's Winograd
        // filters (9.4 MB) do not fit, and a different algorithm rounds differently (through
        // ReLU masks and pooling maxima, by more than 1e-5 here).
        run.extend(["--conv-algorithm", "direct"]);
        if let Some(mib) = limit {
            run.extend(["--max-binding-mib", mib]);
        }
        let (ok, stdout, stderr) = convnet(&run);
        assert!(ok, "{stdout}{stderr}");
        assert_eq!(
            stdout.contains("runs in 2 parts along it, as one storage binding holds: [5, 5]"),
            limit.is_some(),
            "{stdout}"
        );
        grads.push(convnet_wgpu::weights::Weights::load(Path::new(&out), &network).unwrap());
        logits.push(convnet_wgpu::npy::read(Path::new(&output)).unwrap().data);
    }
    // Largest |a - b| over the largest |b|, as `convnet check` measures it.
    let relative = |a: &[f32], b: &[f32]| convnet_wgpu::check::compare("", a, b).unwrap().relative;
    assert!(relative(&logits[1], &logits[0]) <= 1e-5);
    for ((name, whole), (_, parts)) in grads[0].iter().zip(grads[1].iter()) {
        let r = relative(&parts.data, &whole.data);
        assert!(r <= 1e-5, "{name}: {r:e}");
    }
    let json = path("bench.json");
    let bench = [
        "bench",
        "--model",
        "alexnet",
        "--batch",
        "10",
        "--max-binding-mib",
        "6",
        "--update",
        "--pass",
        "forward-backward",
        "--batches",
        "1",
        "--burn-in",
        "0",
        "--json",
        &json,
    ];
    let (ok, stdout, stderr) = convnet(&bench);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("the batch in 2 parts"), "{stdout}");
    assert!(stdout.contains("Training_step across 1 steps"), "{stdout}");
    let mut train = vec!["train", "--model", "alexnet", "--weights", &weights];
    train.extend([
        "--input",
        &images,
        "--labels",
        &labels,
        "--loss",
        "cross-entropy",
    ]);
    train.extend(["--lr", "1e-4", "--steps", "2", "--max-binding-mib", "6"]);
    let (ok, stdout, stderr) = convnet(&train);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("the batch in 2 parts"), "{stdout}");
    assert!(stdout.contains("step 1, loss = "), "{stdout}");
}
