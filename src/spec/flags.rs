//! The command line's syntax for build values (`SOURCE:DEST`, `KEY=VALUE`, argv as JSON or one
//! string, `SECONDS|now`), parsed into the typed values [`Overrides`](super::Overrides) holds.
//!
//! The `lamina` binary calls these while turning its flags into `Overrides`; another front end
//! that takes the same syntax can too. A program that already has the values builds
//! `Overrides` directly and needs none of this. Every failure is an [`Error::Usage`] whose
//! message names the flag (`flag` is the flag as written, e.g. `--env`).

use std::collections::BTreeMap;
use std::path::Path;

use super::Timestamp;
use crate::error::{Error, Result};
use crate::layer::LayerSpec;
use crate::platform::{ParsePlatformError, Platform};
use crate::reference::{ImageRef, ParseReferenceError};

/// An image reference (`oci:DIR[:TAG]`, `docker://REF`, `scratch`, ...), its local path
/// anchored at `cwd`.
pub fn reference(s: &str, flag: &str, cwd: &Path) -> Result<ImageRef> {
    let r: ImageRef = s
        .parse()
        .map_err(|e: ParseReferenceError| Error::Usage(format!("{flag}: {e}")))?;
    Ok(r.relative_to(cwd))
}

/// A platform (`linux/amd64`, `x86_64`, `linux/arm64`, `aarch64`).
pub fn platform(s: &str, flag: &str) -> Result<Platform> {
    s.parse()
        .map_err(|e: ParsePlatformError| Error::Usage(format!("{flag}: {e}")))
}

/// `--layer SOURCE:DEST`: a plain layer (no excludes, modes or owners) of `SOURCE`, anchored at
/// `cwd`, at `DEST`. The last `:` splits, so a source may hold colons; `DEST` is checked when
/// the spec is resolved.
pub fn layer(s: &str, cwd: &Path) -> Result<LayerSpec> {
    let (src, dest) = s
        .rsplit_once(':')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| {
            Error::Usage(format!(
                "--layer `{s}`: expected SOURCE:DEST, e.g. function:/var/task"
            ))
        })?;
    Ok(plain_layer(cwd.join(src), dest))
}

/// A layer of `source`'s files at `dest`, with the source's modes and root as owner.
pub fn plain_layer(source: impl Into<std::path::PathBuf>, dest: &str) -> LayerSpec {
    LayerSpec {
        source: source.into(),
        dest: dest.to_owned(),
        exclude: vec![],
        mode: None,
        dir_mode: None,
        uid: 0,
        gid: 0,
        wheels: false,
    }
}

/// `KEY=VALUE`: split at the first `=`, so the key never holds one (the value may); the key
/// must not be empty.
pub fn key_value(s: &str, flag: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(Error::Usage(format!("{flag} `{s}`: expected KEY=VALUE"))),
    }
}

/// Repeated `KEY=VALUE`s as a map; a later key wins over an earlier one.
pub fn key_values<S: AsRef<str>>(items: &[S], flag: &str) -> Result<BTreeMap<String, String>> {
    items.iter().map(|s| key_value(s.as_ref(), flag)).collect()
}

/// `--entrypoint`/`--cmd`: a JSON array of strings, or one string taken as a single element.
pub fn argv(s: &str, flag: &str) -> Result<Vec<String>> {
    crate::image::argv_from_str(s)
        .map_err(|e| Error::Usage(format!("{flag} `{s}` is not a JSON array of strings: {e}")))
}

/// `now`, or seconds since the epoch; `what` names the source (`--timestamp`,
/// `SOURCE_DATE_EPOCH`). The upper bound is checked when the spec is resolved.
pub fn timestamp(s: &str, what: &str) -> Result<Timestamp> {
    if s == "now" {
        return Ok(Timestamp::Now);
    }
    s.trim().parse::<u64>().map(Timestamp::Fixed).map_err(|_| {
        Error::Usage(format!(
            "{what} `{s}` is not a number of seconds since 1970-01-01 (or `now`)"
        ))
    })
}

/// The `--timestamp` flag, else `SOURCE_DATE_EPOCH` (the environment variable's value, read by
/// the caller; empty counts as unset and it is not parsed when the flag is given), else `None`
/// (the spec then uses 0).
pub fn timestamp_or_epoch(
    flag: Option<&str>,
    source_date_epoch: Option<&str>,
) -> Result<Option<Timestamp>> {
    match (flag, source_date_epoch) {
        (Some(f), _) => timestamp(f, "--timestamp").map(Some),
        (None, Some(e)) if !e.is_empty() => timestamp(e, "SOURCE_DATE_EPOCH").map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_syntax_parses_and_names_the_flag() {
        let l = layer("a:b:/opt", Path::new("/c")).unwrap();
        assert_eq!(
            (l.source.as_path(), l.dest.as_str()),
            (Path::new("/c/a:b"), "/opt")
        );
        assert!(layer("dir", Path::new("/c")).is_err());
        assert_eq!(
            key_value("K=V=W", "--env").unwrap(),
            ("K".to_owned(), "V=W".to_owned())
        );
        let e = key_value("=V", "--label").unwrap_err();
        assert!(matches!(e, Error::Usage(_)));
        assert_eq!(e.to_string(), "--label `=V`: expected KEY=VALUE");
        let m = key_values(&["A=1", "A=2"], "--env").unwrap();
        assert_eq!(m["A"], "2");
        assert_eq!(argv(r#"["a","b"]"#, "--cmd").unwrap(), ["a", "b"]);
        assert_eq!(argv("/bootstrap", "--cmd").unwrap(), ["/bootstrap"]);
        assert!(
            argv("[1]", "--cmd")
                .unwrap_err()
                .to_string()
                .contains("--cmd")
        );
        assert_eq!(timestamp("now", "--timestamp").unwrap(), Timestamp::Now);
        assert_eq!(
            reference("oci:x", "--base", Path::new("/c"))
                .unwrap()
                .local_path(),
            Some(Path::new("/c/x"))
        );
        assert!(platform("sparc", "--platform").is_err());
    }

    #[test]
    fn the_flag_wins_over_source_date_epoch() {
        assert_eq!(
            timestamp_or_epoch(Some("7"), Some("junk")).unwrap(),
            Some(Timestamp::Fixed(7))
        );
        assert_eq!(
            timestamp_or_epoch(None, Some("42")).unwrap(),
            Some(Timestamp::Fixed(42))
        );
        assert_eq!(timestamp_or_epoch(None, Some("")).unwrap(), None);
        assert!(
            timestamp_or_epoch(None, Some("yesterday"))
                .unwrap_err()
                .to_string()
                .contains("SOURCE_DATE_EPOCH")
        );
    }
}
