//! lamina: a daemonless, reproducible OCI image assembler for AWS Lambda.
//!
//! The flow of a build: a [`BuildSpec`] (from `lamina.toml` through [`read_spec_file`] and
//! [`Overrides`], or made by hand) names a base image, layers and config; [`build()`] reads the
//! base for one [`Platform`], writes the new layers, applies the config, runs the Lambda gate and
//! writes the image to its destination (an OCI layout, an archive, or a registry), returning a
//! [`Report`]. [`copy`] pushes or pulls an image as it is, [`inspect`] reads one, [`check()`]
//! runs the Lambda rules, [`zip`] writes Lambda .zip packages and [`run`] runs a function
//! locally as Lambda does.
//!
//! The entry points are async and run on the caller's tokio runtime; CPU-bound work goes to
//! tokio's blocking pool. Caches, credentials and settings come in through [`Options`]: the
//! library reads no environment variables and keeps no global state (but the list of paths it is
//! staging, which [`remove_staging`] removes when a signal ends the process).
//!
//! ```no_run
//! # async fn example() -> lamina::Result<()> {
//! use std::path::Path;
//! let opts = lamina::Options::new("/tmp/lamina-cache".into(), "/root/.docker".into());
//! let file = Path::new("fixtures/lamina.toml");
//! let spec = lamina::BuildSpec::resolve(
//!     Some((file, lamina::read_spec_file(file)?)),
//!     &lamina::Overrides::default(),
//!     Path::new("."),
//! )?;
//! let report = lamina::build(&spec, &opts, &mut |line| eprintln!("{line}")).await?;
//! println!("{}", report.digest);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod base;
mod build;
mod cache;
pub mod deploy;
mod digest;
mod error;
pub mod gc;
mod image;
mod lambda;
mod layer;
mod lock;
mod platform;
mod progress;
mod reference;
mod registry;
pub mod run;
mod spec;
mod staging;
mod task;
mod transport;

pub use base::{BaseUpdate, update as update_base};
pub use build::{BlobReport, Inspection, LayerReport, Report, build, copy, inspect};
pub use digest::{Digest, ParseDigestError};
pub use error::{Error, ErrorKind, Result};
pub use image::{ConfigSpec, Origin};
pub use lambda::{Finding, Report as CheckReport, Rule, Severity, check};
pub use layer::Provenance;
pub use layer::spec::ParseModeError;
pub use layer::{LayerSpec, Mode};
pub use platform::{ParsePlatformError, Platform};
pub use progress::Progress;
pub use reference::{ImageRef, ParseReferenceError, RegistryRef};
pub use registry::auth::Credentials;
pub use registry::ecr::{EcrOptions, TokenCache};
pub use registry::push::{BlobFate, Fate};
pub use registry::timing::Deadline;
pub use registry::{DEFAULT_CHUNK, DEFAULT_STALL, MIN_CHUNK, Options, login};
pub use spec::deploy::{DeploySpec, PackageKind};
pub use spec::flags;
pub use spec::function::{FunctionSpec, starter_spec};
pub use spec::init::use_base as starter_on_base;
pub use spec::init::{Detected, detect as detect_project, render as render_starter};
pub use spec::schema::{SCHEMA_FILE, spec_schema};
pub use spec::{BaseLock, BuildSpec, DeleteSpec, Overrides, SpecFile, Timestamp, read_spec_file};
pub use spec::{CacheField, CacheTo};
/// Remove what this process is staging (for a signal handler, just before exiting).
pub use staging::remove_all as remove_staging;

/// Lambda .zip deployment packages (and Lambda layer zips): from a spec's layers or from an
/// image, written byte for byte reproducibly after Lambda's size limits are checked.
pub mod zip {
    pub use crate::lambda::package::{
        Contents, MAX_UNZIPPED, MAX_ZIPPED, Package, Report, ZipOptions, check, from_image,
        from_layers, from_layers_excluding, write,
    };
    pub use crate::lambda::zipgate::{GateOptions, GateReport};
}
