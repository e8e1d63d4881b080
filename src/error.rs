//! The library's error type: every variant names the file, field or reference at fault.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The build spec (file or flags) is malformed or inconsistent.
    #[error("{}: {message}", file.display())]
    Spec { file: PathBuf, message: String },
    /// A flag or value given on the command line is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A layer input (file, directory or zip) cannot be used.
    #[error("layer source {}: {message}", path.display())]
    Source { path: PathBuf, message: String },
    /// An image (base, input or output) is broken or does not have what was asked for.
    #[error("image {reference}: {message}")]
    Image { reference: String, message: String },
    /// A registry refused the credentials (or their absence): retrying will not help.
    #[error("{0}")]
    Auth(String),
    /// An operating-system error, with what lamina was doing at the time.
    /// (The cause is part of the message, and deliberately not a `source`: printers that
    /// walk the chain would say it twice.)
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn image(reference: impl ToString, message: impl Into<String>) -> Self {
        Error::Image {
            reference: reference.to_string(),
            message: message.into(),
        }
    }
    pub fn source(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Source {
            path: path.as_ref().to_owned(),
            message: message.into(),
        }
    }
}

/// Attach what was being done to an `io::Error`.
pub trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
    /// Shorthand for the common "verb path" context.
    fn at(self, verb: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|cause| Error::Io {
            context: what(),
            cause,
        })
    }
    fn at(self, verb: &str, path: &Path) -> Result<T> {
        self.ctx(|| format!("{verb} {}", path.display()))
    }
}
