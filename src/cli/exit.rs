//! The exit status of a run, decided by the kind of its error (never by message text), and
//! the table `lamina --help` documents.

use std::io;
use std::process::ExitCode;

use lamina::ErrorKind;

/// The run did what was asked (also when stdout was closed early: a reader that stops reading,
/// as `head` does, is not a failure).
pub const SUCCESS: u8 = 0;
/// Any failure not listed below: a registry, image, layer source, sandbox or I/O error.
pub const FAILURE: u8 = 1;
/// The command line or the build spec is wrong: fix the invocation or lamina.toml, do not
/// retry as is.
pub const USAGE: u8 = 2;
/// The Lambda gate found errors: `lamina check`, or a build or push it refused.
pub const LAMBDA_ERRORS: u8 = 3;

/// The table shown after `lamina --help`.
pub const TABLE: &str = "\
Exit status:
  0  success (also when standard output is closed early, as by `| head`)
  1  failure: a registry, image, layer source, sandbox or I/O error
  2  usage error: a bad flag, argument or value, or an invalid build spec (lamina.toml)
  3  the Lambda gate found errors: `lamina check`, or a build or push it refused";

/// `lamina check` found errors: the message names the image and the counts (the findings
/// were printed already).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LambdaErrors(pub String);

/// Whether `err` is a write to a closed standard output, which ends the run quietly.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// The exit status for a failed run.
pub fn code(err: &anyhow::Error) -> u8 {
    if is_broken_pipe(err) {
        return SUCCESS;
    }
    if err.chain().any(|c| c.is::<LambdaErrors>()) {
        return LAMBDA_ERRORS;
    }
    match err
        .chain()
        .find_map(|c| c.downcast_ref::<lamina::Error>())
        .map(lamina::Error::kind)
    {
        // A spec error is the user's description of the build, like a flag: fixing the input
        // is the only way forward, so it is a usage error too.
        Some(ErrorKind::Usage | ErrorKind::Spec) => USAGE,
        Some(ErrorKind::Lambda) => LAMBDA_ERRORS,
        _ => FAILURE,
    }
}

/// Report `result` on stderr as `error: ...` and turn it into the process's exit status.
pub fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(SUCCESS),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(SUCCESS),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_documented_codes() {
        let usage = anyhow::Error::new(lamina::Error::usage("bad"));
        assert_eq!(code(&usage), USAGE);
        let spec = anyhow::Error::new(lamina::Error::Spec {
            file: "lamina.toml".into(),
            message: "bad".into(),
        });
        assert_eq!(code(&spec), USAGE);
        let image = anyhow::Error::new(lamina::Error::image("oci:x", "broken"));
        assert_eq!(code(&image), FAILURE);
        assert_eq!(code(&anyhow::anyhow!("plain")), FAILURE);
        let gate = anyhow::Error::new(LambdaErrors("fails".into()));
        assert_eq!(code(&gate), LAMBDA_ERRORS);
        let pipe = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(code(&pipe.context("writing")), SUCCESS);
    }
}
