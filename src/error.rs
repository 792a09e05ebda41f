//! The one error type of the library. Every message is a single line that names what went wrong
//! and where (the op, the layer, the file, the adapter), since the CLI prints it as it is.

use std::path::PathBuf;

/// Everything that can go wrong, from a bad flag to a lost GPU.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work (batch 0, an unknown model, an impossible shape).
    #[error("{0}")]
    InvalidArgument(String),

    /// No adapter at all, or none that matches what was asked for.
    #[error("{0}")]
    Adapter(String),

    /// A file that cannot be read, parsed or written, or whose contents do not fit the network.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    /// A tensor or dispatch larger than the adapter allows.
    #[error("{what} does not fit the adapter '{adapter}': {detail}")]
    TooLarge {
        what: String,
        adapter: String,
        detail: String,
    },

    /// A wgpu validation, out-of-memory or internal error, or a lost device.
    #[error("GPU error on '{adapter}' during {during}: {message}")]
    Gpu {
        adapter: String,
        during: String,
        message: String,
    },

    /// GPU and CPU reference disagree beyond the stated tolerance.
    #[error("{0}")]
    Mismatch(String),

    /// A fault of this library, not of its input: an invariant of the planner or the GPU host
    /// that did not hold. Please report it.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
