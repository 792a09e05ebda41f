//! Any bytes as a `.npy` file: decoding must return Ok or a one-line error, never panic, hang or
//! allocate what the header merely claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match convnet_wgpu::npy::decode(bytes) {
        Ok(array) => assert_eq!(
            array.data.len(),
            array.shape.iter().product::<usize>(),
            "decoded data disagrees with its shape"
        ),
        Err(message) => {
            // The error as npy::read returns it and the CLI prints it.
            let error = convnet_wgpu::Error::File {
                path: "input.npy".into(),
                message,
            };
            let line = error.to_string();
            assert!(
                !line.chars().any(char::is_control),
                "not one line: {line:?}"
            );
        }
    }
});
