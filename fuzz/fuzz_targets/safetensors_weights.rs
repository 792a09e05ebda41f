//! Any bytes as a weights file: decoding must return Ok or a one-line error, never panic, hang
//! or allocate what the bytes merely claim. The network is small so that valid files (the seed
//! corpus) are small too; the checks are the ones every network's files go through.
#![no_main]

use convnet_wgpu::weights::Weights;
use libfuzzer_sys::fuzz_target;

mod network;

fuzz_target!(|bytes: &[u8]| {
    if let Err(message) = Weights::decode(bytes, &network::network()) {
        // The error as Weights::load returns it and the CLI prints it.
        let error = convnet_wgpu::Error::File {
            path: "weights.safetensors".into(),
            message,
        };
        let line = error.to_string();
        assert!(
            !line.chars().any(char::is_control),
            "not one line: {line:?}"
        );
    }
});
