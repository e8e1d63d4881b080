//! The library's error type: one enum whose variants are the kinds of failure, each naming the
//! file, field or reference at fault. [`Error::kind`] lets a caller (the CLI's exit codes, a
//! retry loop) branch on the kind, never on message text.

use std::io;
use std::path::{Path, PathBuf};

/// Every failure the library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or value given by the caller is invalid (bad syntax, out of range, conflicting).
    #[error("{0}")]
    Usage(String),
    /// The build spec (file or flags) is malformed or inconsistent.
    #[error("{}: {message}", file.display())]
    Spec {
        /// The spec file (or `flags` when it came from the command line).
        file: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A layer input (file, directory or zip) cannot be used.
    #[error("layer source {}: {message}", path.display())]
    Source {
        /// The input at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An image (base, input or output) is broken or does not have what was asked for.
    #[error("image {reference}: {message}")]
    Image {
        /// The image reference as the user wrote it.
        reference: String,
        /// What is wrong with it.
        message: String,
    },
    /// The Lambda gate found errors in an image: Lambda would refuse it, so it was not pushed.
    #[error("image {reference}: {message}")]
    Lambda {
        /// The image reference as the user wrote it.
        reference: String,
        /// The findings, and what to do.
        message: String,
    },
    /// A registry (or the AWS API behind one) failed or refused a request.
    #[error("{message}")]
    Registry {
        /// `host[:port]` of the registry, or the API endpoint.
        registry: String,
        /// The HTTP status, when the peer answered.
        status: Option<u16>,
        /// The error code the peer gave (`MANIFEST_UNKNOWN`, `RepositoryNotFoundException`).
        code: Option<String>,
        /// The whole message, naming the registry and what to do.
        message: String,
    },
    /// A registry refused the credentials (or their absence): retrying will not help.
    #[error("{0}")]
    Auth(String),
    /// The local Lambda emulator could not set up or run the function's sandbox.
    #[error("{0}")]
    Sandbox(String),
    /// An operating-system error, with what lamina was doing at the time.
    /// (The cause is part of the message, and deliberately not a `source`: printers that
    /// walk the chain would say it twice.)
    #[error("{context}: {cause}")]
    Io {
        /// What lamina was doing.
        context: String,
        /// The operating system's error.
        cause: io::Error,
    },
    /// A bug in lamina (a worker thread panicked): please report it.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The kind of an [`Error`], for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// [`Error::Usage`]
    Usage,
    /// [`Error::Spec`]
    Spec,
    /// [`Error::Source`]
    Source,
    /// [`Error::Image`]
    Image,
    /// [`Error::Lambda`]
    Lambda,
    /// [`Error::Registry`]
    Registry,
    /// [`Error::Auth`]
    Auth,
    /// [`Error::Sandbox`]
    Sandbox,
    /// [`Error::Io`]
    Io,
    /// [`Error::Internal`]
    Internal,
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A registry that could not be reached (an error with no HTTP status) with its message
    /// rewritten by `f` (to name the image and the way to go on without the registry); any
    /// other error as it is.
    pub fn when_unreachable(self, f: impl FnOnce(&str) -> String) -> Error {
        match self {
            Error::Registry {
                registry,
                status: None,
                code,
                message,
            } => Error::Registry {
                registry,
                status: None,
                code,
                message: f(&message),
            },
            other => other,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) => ErrorKind::Usage,
            Error::Spec { .. } => ErrorKind::Spec,
            Error::Source { .. } => ErrorKind::Source,
            Error::Image { .. } => ErrorKind::Image,
            Error::Lambda { .. } => ErrorKind::Lambda,
            Error::Registry { .. } => ErrorKind::Registry,
            Error::Auth(_) => ErrorKind::Auth,
            Error::Sandbox(_) => ErrorKind::Sandbox,
            Error::Io { .. } => ErrorKind::Io,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }
    /// An [`Error::Image`] for `reference`.
    pub fn image(reference: impl ToString, message: impl Into<String>) -> Self {
        Error::Image {
            reference: reference.to_string(),
            message: message.into(),
        }
    }
    /// An [`Error::Source`] for the input at `path`.
    pub fn source(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Source {
            path: path.as_ref().to_owned(),
            message: message.into(),
        }
    }
    /// An [`Error::Registry`] with no HTTP status (the peer could not be reached, or the
    /// failure was lamina's judgement of what it sent).
    pub fn registry(registry: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Registry {
            registry: registry.into(),
            status: None,
            code: None,
            message: message.into(),
        }
    }
    /// An [`Error::Usage`].
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }
}

/// Attach what was being done to an `io::Error`.
pub trait IoContext<T> {
    /// Wrap the error with a lazily built description of what was being done.
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
