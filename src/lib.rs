//! lamina: a daemonless, reproducible OCI image assembler for AWS Lambda.
//!
//! The flow of a build: [`spec::BuildSpec`] → base read through a [`transport`] for one
//! [`platform::Platform`] → new layers written by [`layer`] → config and manifest assembled by
//! [`image`] → written through a transport. [`build::build`] runs it.

pub mod build;
pub mod cache;
pub mod digest;
pub mod error;
pub mod image;
pub mod lambda;
pub mod layer;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod run;
pub mod spec;
pub mod transport;

pub use error::{Error, Result};
