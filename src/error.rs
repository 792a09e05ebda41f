//! The one error type of the library. Every message is a single line that names what went wrong
//! and where (the op, the layer, the file, the adapter), since the CLI prints it as it is.
//!
//! Messages carry text from files and the command line (tensor names, paths, adapter names) and
//! from other crates' errors about them, any of which may hold a newline or another control
//! character. Display escapes every control character of the whole message, so that it stays one
//! line whatever produced it.

use std::fmt::{self, Write};
use std::path::PathBuf;

/// Everything that can go wrong, from a bad flag to a lost GPU.
#[derive(Debug)]
pub enum Error {
    /// A setting that cannot work (batch 0, an unknown model, an impossible shape).
    InvalidArgument(String),

    /// No adapter at all, or none that matches what was asked for.
    Adapter(String),

    /// A file that cannot be read, parsed or written, or whose contents do not fit the network.
    File {
        /// The file, as the caller named it.
        path: PathBuf,
        /// What is wrong with it, one line.
        message: String,
    },

    /// A tensor or dispatch larger than the adapter allows.
    TooLarge {
        /// What does not fit (a batch, a layer's weight, a launch).
        what: String,
        /// The adapter's name.
        adapter: String,
        /// The sizes involved and the limit, and what would fit where that can be said.
        detail: String,
    },

    /// A wgpu validation, out-of-memory or internal error, or a lost device.
    Gpu {
        /// The adapter's name.
        adapter: String,
        /// What the program was doing (network setup, a forward pass, a readback).
        during: String,
        /// wgpu's message, joined into one line.
        message: String,
    },

    /// GPU and CPU reference disagree beyond the stated tolerance.
    Mismatch(String),

    /// A fault of this library, not of its input: an invariant of the planner or the GPU host
    /// that did not hold. Please report it.
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Escaping(f);
        match self {
            Error::InvalidArgument(message)
            | Error::Adapter(message)
            | Error::Mismatch(message) => out.write_str(message),
            Error::File { path, message } => write!(out, "{}: {message}", path.display()),
            Error::TooLarge {
                what,
                adapter,
                detail,
            } => write!(out, "{what} does not fit the adapter '{adapter}': {detail}"),
            Error::Gpu {
                adapter,
                during,
                message,
            } => write!(out, "GPU error on '{adapter}' during {during}: {message}"),
            Error::Internal(message) => write!(out, "internal error: {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// Writes through to a formatter with every control character escaped as Rust writes it in a
/// string literal (`\n`, `\r`, `\t`, `\u{1b}`, ...): C0, DEL and C1 alike.
struct Escaping<'a, 'f>(&'a mut fmt::Formatter<'f>);

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c.is_control() {
                write!(self.0, "{}", c.escape_debug())?;
            } else if breaks_or_reorders_a_line(c) {
                write!(self.0, "\\u{{{:x}}}", u32::from(c))?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// The characters besides controls that break a line (line and paragraph separators) or reorder
/// what a terminal shows of it (bidirectional embeddings, overrides and isolates).
fn breaks_or_reorders_a_line(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn display_escapes_every_control_character() {
        let err = Error::File {
            path: "dir\nname/w\r.safetensors".into(),
            message: "invalid offset for tensor `fco\nv1.biasght`\t\u{0}\u{1b}[31m\u{7f}\u{85}"
                .into(),
        };
        assert_eq!(
            err.to_string(),
            r"dir\nname/w\r.safetensors: invalid offset for tensor `fco\nv1.biasght`\t\0\u{1b}[31m\u{7f}\u{85}"
        );
        let gpu = Error::Gpu {
            adapter: "a\nb".into(),
            during: "c\rd".into(),
            message: "e\u{2}f".into(),
        };
        assert_eq!(gpu.to_string(), r"GPU error on 'a\nb' during c\rd: e\u{2}f");
        let separators = Error::InvalidArgument("a\u{2028}b\u{2029}c\u{202e}d\u{2066}e".into());
        assert_eq!(
            separators.to_string(),
            r"a\u{2028}b\u{2029}c\u{202e}d\u{2066}e"
        );
    }

    #[test]
    fn display_leaves_printable_text_alone() {
        let text = "tensor \"conv1.weight\" has shape [2, 3], ünïcode ✓, a \\ backslash";
        assert_eq!(Error::InvalidArgument(text.into()).to_string(), text);
    }
}
