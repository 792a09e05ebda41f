//! `.npy` files in C order: little-endian f32 (the input images and the logits) and int64 or
//! int32 (class labels).
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
    match parse(bytes, None)?.0.as_str() {
        "<f4" => {}
        ">f4" => return Err("big-endian data ('>f4'); write it little-endian ('<f4')".into()),
        other => return Err(format!("dtype {other:?} is not f32 ('<f4')")),
    }
    let (_, shape, data) = parse(bytes, Some(4))?;
    let data = f32_values(data).collect();
    Ok(Array { shape, data })
}

/// The little-endian f32 values of `bytes` (any alignment: a byte buffer need not be aligned
/// for a cast), a trailing partial value ignored. Every file format here stores f32 this way.
pub fn f32_values(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// An array in a `.npy` file whose header has been read and checked against the file's length,
/// its data left on disk to be read a piece at a time ([`ArrayFile::read_at`]): a data set
/// larger than memory is never read whole.
#[derive(Debug)]
pub struct ArrayFile {
    file: std::fs::File,
    path: std::path::PathBuf,
    /// The dtype as the header writes it (`<f4`, `|u1`).
    pub descr: String,
    /// The dimensions, outermost first.
    pub shape: Vec<usize>,
    data_offset: u64,
}

/// Opens a C-order `.npy` file of f32 (`<f4`) or uint8 (`|u1`) values, reading its header
/// only. Fails, naming the file, for another dtype or a length that disagrees with the shape.
pub fn open(path: &Path) -> Result<ArrayFile> {
    use std::io::Read;
    if path.is_dir() {
        return Err(Error::file(path, "is a directory, not a file"));
    }
    let mut file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let length = file.metadata().map_err(|e| Error::file(path, e))?.len();
    let mut start = [0u8; 12];
    let got = file.read(&mut start).map_err(|e| Error::file(path, e))?;
    let header_end = match (got, start[6]) {
        (..10, _) => return Err(Error::file(path, "not a .npy file (bad magic)")),
        (_, 1) => 10 + u64::from(u16::from_le_bytes([start[8], start[9]])),
        (12, 2 | 3) => {
            12 + u64::from(u32::from_le_bytes([
                start[8], start[9], start[10], start[11],
            ]))
        }
        _ => 10, // parse() names what is wrong
    };
    let mut header = vec![0u8; header_end.min(length) as usize];
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Error::file(path, e))?;
    file.read_exact(&mut header)
        .map_err(|e| Error::file(path, e))?;
    let (descr, shape, _) = parse(&header, None).map_err(|m| Error::file(path, m))?;
    let width = match descr.as_str() {
        "<f4" => 4,
        "|u1" | "<u1" => 1,
        other => {
            return Err(Error::file(
                path,
                format!("images of dtype {other:?}; save them as float32 ('<f4') or uint8 ('|u1')"),
            ))
        }
    };
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let needed = count.and_then(|c| c.checked_mul(width));
    if needed != Some(length - header.len() as u64) {
        return Err(Error::file(
            path,
            format!(
                "shape {shape:?} needs {} bytes of data, the file holds {}",
                needed.unwrap_or(u64::MAX),
                length - header.len() as u64
            ),
        ));
    }
    Ok(ArrayFile {
        file,
        path: path.to_path_buf(),
        descr,
        shape,
        data_offset: header.len() as u64,
    })
}

impl ArrayFile {
    /// Reads `out.len()` bytes of the data from byte `offset` of it.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        let at = self.data_offset + offset;
        #[cfg(unix)]
        let read = std::os::unix::fs::FileExt::read_exact_at(&self.file, out, at);
        #[cfg(not(unix))]
        let read = {
            use std::io::{Read, Seek};
            let mut file = &self.file;
            file.seek(std::io::SeekFrom::Start(at))
                .and_then(|_| file.read_exact(out))
        };
        read.map_err(|e| Error::file(&self.path, e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads class labels: a 1-D array of int64 or int32 (NumPy's and PyTorch's label types), each
/// at least 0.
pub fn read_labels(path: &Path) -> Result<Vec<usize>> {
    let bytes = files::read(path)?;
    decode_labels(&bytes).map_err(|message| Error::file(path, message))
}

/// Decodes `.npy` bytes of labels (see [`read_labels`]).
pub fn decode_labels(bytes: &[u8]) -> std::result::Result<Vec<usize>, String> {
    let descr = parse(bytes, None)?.0;
    let width = match descr.as_str() {
        "<i8" => 8,
        "<i4" => 4,
        other => {
            return Err(format!(
                "labels of dtype {other:?}; save them as int64 ('<i8') or int32 ('<i4')"
            ))
        }
    };
    let (_, shape, data) = parse(bytes, Some(width))?;
    if shape.len() != 1 {
        return Err(format!(
            "labels of shape {shape:?}; one label per image, shape [N]"
        ));
    }
    data.chunks_exact(width)
        .enumerate()
        .map(|(i, b)| {
            let label = if width == 8 {
                i64::from_le_bytes(b.try_into().expect("8 bytes"))
            } else {
                i64::from(i32::from_le_bytes(b.try_into().expect("4 bytes")))
            };
            usize::try_from(label).map_err(|_| format!("label {label} of image {i} is negative"))
        })
        .collect()
}

/// The header's dtype, the shape, and the data bytes of a C-order `.npy` file; with `width`, the
/// data checked to hold the shape's count of `width`-byte values (without, only the header is
/// read: the dtype decides the width).
fn parse(
    bytes: &[u8],
    width: Option<usize>,
) -> std::result::Result<(String, Vec<usize>, &[u8]), String> {
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
    let descr = descr.trim_matches(|c| c == '\'' || c == '"').to_string();
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
    if let Some(width) = width {
        if count.checked_mul(width) != Some(data.len()) {
            return Err(format!(
                "shape {shape:?} needs {} bytes of data, the file holds {}",
                count.saturating_mul(width),
                data.len()
            ));
        }
    }
    Ok((descr, shape, data))
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
    encode_raw("<f4", shape, bytemuck::cast_slice(data))
}

/// Encodes labels as a one-dimensional int64 `.npy` array (PyTorch's class-index dtype).
pub fn encode_labels(labels: &[usize]) -> Vec<u8> {
    let values: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    encode_raw("<i8", &[labels.len()], bytemuck::cast_slice(&values))
}

/// Writes indices as an int64 `.npy` array of `shape` (C order), atomically: a training run's
/// sample orders, one row per epoch. Fails, writing nothing, when `values` does not hold the
/// shape's number of values.
pub fn write_indices(path: &Path, shape: &[usize], values: &[usize]) -> Result<()> {
    if shape.iter().product::<usize>() != values.len() {
        return Err(Error::InvalidArgument(format!(
            "{}: shape {shape:?} does not hold {} values",
            path.display(),
            values.len()
        )));
    }
    let values: Vec<i64> = values.iter().map(|&v| v as i64).collect();
    files::write_atomically(
        path,
        &encode_raw("<i8", shape, bytemuck::cast_slice(&values)),
    )
}

/// Writes labels as a one-dimensional int64 `.npy` array, atomically.
pub fn write_labels(path: &Path, labels: &[usize]) -> Result<()> {
    files::write_atomically(path, &encode_labels(labels))
}

/// The `.npy` bytes of an array of dtype `descr` whose C-order values are `data`.
fn encode_raw(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Version 1.0 gives the header's length in 2 bytes, 2.0 in 4; the padding may add 64.
    let long = header.len() + 64 > usize::from(u16::MAX);
    let length_bytes = if long { 4 } else { 2 };
    // Pad so the data starts on a 64-byte boundary, ending the header with a newline.
    let unpadded = MAGIC.len() + 2 + length_bytes + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(unpadded + 63 + data.len());
    bytes.extend_from_slice(MAGIC);
    if long {
        bytes.extend_from_slice(&[2, 0]);
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    } else {
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    }
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Writes a uint8 C-order array (8-bit images), atomically. Fails, writing nothing, when `data`
/// does not hold the shape's number of values.
pub fn write_u8(path: &Path, shape: &[usize], data: &[u8]) -> Result<()> {
    if shape.iter().product::<usize>() != data.len() {
        return Err(Error::InvalidArgument(format!(
            "{}: shape {shape:?} does not hold {} values",
            path.display(),
            data.len()
        )));
    }
    files::write_atomically(path, &encode_raw("|u1", shape, data))
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
    fn labels_read_as_int64_or_int32_and_refuse_the_rest() {
        let header = |descr: &str, shape: &str| {
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
        };
        let mut int64 = with_header(&header("<i8", "(2,)"), 0);
        int64.extend([3i64, 0].iter().flat_map(|v| v.to_le_bytes()));
        assert_eq!(decode_labels(&int64).unwrap(), vec![3, 0]);
        let mut int32 = with_header(&header("<i4", "(3,)"), 0);
        int32.extend([1i32, 7, 2].iter().flat_map(|v| v.to_le_bytes()));
        assert_eq!(decode_labels(&int32).unwrap(), vec![1, 7, 2]);
        let mut negative = with_header(&header("<i4", "(1,)"), 0);
        negative.extend((-1i32).to_le_bytes());
        let cases = [
            (negative, "label -1 of image 0 is negative"),
            (with_header(&header("<f4", "(2,)"), 8), "save them as int64"),
            (with_header(&header("<i8", "(2, 1)"), 16), "shape [N]"),
            (with_header(&header("<i8", "(2,)"), 12), "needs 16 bytes"),
        ];
        for (bytes, expected) in cases {
            let err = decode_labels(&bytes).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
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
