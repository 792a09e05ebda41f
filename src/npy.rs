//! `.npy` files of little-endian f32 in C order: the input images and the logits.
//!
//! The format is small (a magic string, a version, a Python-dict header, raw data), and reading it
//! ourselves lets every malformed file get a precise one-line error: Fortran order, big-endian or
//! non-f32 data, a shape that disagrees with the file's length (checked before anything that size
//! is allocated).

use std::path::Path;

use crate::error::{Error, Result};
use crate::files;

const MAGIC: &[u8] = b"\x93NUMPY";

/// An f32 array read from a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// The dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The values in C order: `shape`'s product of them.
    pub data: Vec<f32>,
}

/// Reads an f32 C-order array.
pub fn read(path: &Path) -> Result<Array> {
    let bytes = files::read(path)?;
    decode(&bytes).map_err(|message| Error::file(path, message))
}

/// Decodes `.npy` bytes; the error is one line saying what is wrong with them.
pub fn decode(bytes: &[u8]) -> std::result::Result<Array, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or("truncated header")?;
    let header =
        std::str::from_utf8(&bytes[header_start..data_start]).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<f4" => {}
        ">f4" => return Err("big-endian data ('>f4'); write it little-endian ('<f4')".into()),
        other => return Err(format!("dtype {other:?} is not f32 ('<f4')")),
    }
    let fortran = dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")?;
    if fortran != "False" {
        return Err("Fortran-order data; save a C-order array (np.ascontiguousarray)".into());
    }
    let shape = parse_shape(&dict_value(header, "shape").ok_or("header has no 'shape'")?)?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("shape is absurdly large")?;
    let data = &bytes[data_start..];
    if count.checked_mul(4) != Some(data.len()) {
        return Err(format!(
            "shape {shape:?} needs {} bytes of data, the file holds {}",
            count.saturating_mul(4),
            data.len()
        ));
    }
    let data = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Array { shape, data })
}

/// The text of `key`'s value in a Python dict literal such as `{'descr': '<f4', 'shape': (2, 3), }`.
fn dict_value(header: &str, key: &str) -> Option<String> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim().to_string())
}

fn parse_shape(text: &str) -> std::result::Result<Vec<usize>, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("shape {text:?} is not a tuple"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("shape entry {s:?} is not a size"))
        })
        .collect()
}

/// Encodes an f32 C-order array as `.npy` bytes: version 1.0, or 2.0 for a header longer than
/// version 1.0 can say (thousands of dimensions). `data` should hold the shape's number of values;
/// [`write()`] checks that it does.
pub fn encode(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Version 1.0 gives the header's length in 2 bytes, 2.0 in 4; the padding may add 64.
    let long = header.len() + 64 > usize::from(u16::MAX);
    let length_bytes = if long { 4 } else { 2 };
    // Pad so the data starts on a 64-byte boundary, ending the header with a newline.
    let unpadded = MAGIC.len() + 2 + length_bytes + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(unpadded + 63 + data.len() * 4);
    bytes.extend_from_slice(MAGIC);
    if long {
        bytes.extend_from_slice(&[2, 0]);
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    } else {
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    }
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(bytemuck::cast_slice(data));
    bytes
}

/// Writes an f32 C-order array, atomically. Fails, writing nothing, when `data` does not hold
/// the shape's number of values.
pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if count != Some(data.len()) {
        return Err(Error::InvalidArgument(format!(
            "{}: shape {shape:?} does not hold {} values",
            path.display(),
            data.len()
        )));
    }
    files::write_atomically(path, &encode(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bytes = encode(&[2, 3, 4], &data);
        assert_eq!(bytes.len() % 64, 24 * 4 % 64);
        let array = decode(&bytes).unwrap();
        assert_eq!(array.shape, vec![2, 3, 4]);
        assert_eq!(array.data, data);
    }

    #[test]
    fn one_dimensional_shape_round_trips() {
        let array = decode(&encode(&[3], &[1.0, 2.0, 3.0])).unwrap();
        assert_eq!(array.shape, vec![3]);
    }

    fn with_header(header: &str, data_len: usize) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data_len));
        bytes
    }

    #[test]
    fn a_long_header_is_written_as_version_2() {
        let shape = vec![1; 30_000];
        let bytes = encode(&shape, &[7.0]);
        assert_eq!(bytes[6], 2);
        let array = decode(&bytes).unwrap();
        assert_eq!((array.shape, array.data), (shape, vec![7.0]));
    }

    #[test]
    fn write_refuses_data_that_does_not_fill_the_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let err = write(&path, &[2, 3], &[0.0; 5]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("does not hold 5 values"), "{err}");
        assert!(!path.exists());
        let err = write(&path, &[usize::MAX, 2], &[]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn rejects_malformed_files() {
        let cases = [
            (b"hello world".to_vec(), "bad magic"),
            (
                with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8),
                "big-endian",
            ),
            (
                with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16),
                "not f32",
            ),
            (
                with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8),
                "Fortran",
            ),
            (
                with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 8),
                "needs 12 bytes",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 9999999), }",
                    8,
                ),
                "absurdly large",
            ),
        ];
        for (bytes, expected) in cases {
            let err = decode(&bytes).unwrap_err();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
        let mut truncated = encode(&[2, 2], &[1.0; 4]);
        truncated.truncate(20);
        assert!(decode(&truncated).unwrap_err().contains("truncated"));
    }
}
