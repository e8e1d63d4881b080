//! What one layer is made of, as a spec describes it: a source placed at an in-image path.

use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

/// One `[[layer]]`: a file, directory or .zip placed at `dest`.
#[derive(Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// The input: a directory, a single file, or a .zip whose entries are extracted.
    /// Absolute once the spec is resolved.
    pub source: PathBuf,
    /// Absolute in-image path: the directory a directory or .zip goes into; for a single file,
    /// its path (or its directory, with a trailing `/`).
    pub dest: String,
    /// Globs (dockerignore style) of source paths left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Permission bits for every file, instead of the source's (exec bits kept otherwise).
    pub mode: Option<Mode>,
    /// Permission bits for every directory (default 0755).
    pub dir_mode: Option<Mode>,
    /// Owner of every entry in the layer.
    #[serde(default)]
    pub uid: u32,
    /// Group of every entry in the layer.
    #[serde(default)]
    pub gid: u32,
    /// Not in lamina.toml: the source is Python wheels (`runtime_client`'s `path`). A `.whl`
    /// file is read as its entries, as a .zip is; a directory as the entries of every `*.whl`
    /// in it, merged (two wheels writing one path with different bytes are refused).
    #[serde(skip)]
    pub wheels: bool,
}

/// A Unix permission mode: a TOML integer (`0o644`) or an octal string (`"0644"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

/// Why a value is not a permission [`Mode`]; the message quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseModeError(String);

impl Mode {
    /// An octal string, with or without a `0o` prefix, up to `7777`.
    pub fn parse(s: &str) -> Result<Mode, ParseModeError> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        let v = u32::from_str_radix(digits, 8).map_err(|_| {
            ParseModeError(format!(
                "mode `{s}` is not an octal number such as \"0644\""
            ))
        })?;
        Mode::check(v.into())
    }
    fn check(v: i64) -> Result<Mode, ParseModeError> {
        if v < 0 {
            return Err(ParseModeError(format!("mode {v} is negative")));
        }
        match u32::try_from(v) {
            Ok(m) if m <= 0o7777 => Ok(Mode(m)),
            _ => Err(ParseModeError(format!(
                "mode {v:#o} is out of range: permission bits go up to 0o7777"
            ))),
        }
    }
}

impl FromStr for Mode {
    type Err = ParseModeError;
    fn from_str(s: &str) -> Result<Mode, ParseModeError> {
        Mode::parse(s)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        let r = match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("a mode is an integer (0o644) or a string (\"0644\")")
        })? {
            Raw::Int(i) => Mode::check(i),
            Raw::Str(s) => Mode::parse(&s),
        };
        r.map_err(serde::de::Error::custom)
    }
}

/// Why a string is not an absolute in-image path; the message names the field and the path.
/// The caller turns it into the [`Error`](crate::error::Error) kind that fits (a flag, a spec
/// field, a layer source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ImagePathError(String);

/// The message, for callers that build an error message around it.
impl From<ImagePathError> for String {
    fn from(e: ImagePathError) -> String {
        e.0
    }
}

/// Check an absolute in-image path and return it without its leading `/`. `field` names
/// where it came from in the message (`dest`, `--delete`).
pub fn image_path(p: &str, field: &str) -> Result<String, ImagePathError> {
    if !p.starts_with('/') {
        return Err(ImagePathError(format!(
            "{field} `{p}` must be an absolute path in the image (start with /)"
        )));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(ImagePathError(format!(
                    "{field} `{p}` must not contain `..`"
                )));
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_and_in_range() {
        assert_eq!("0644".parse::<Mode>(), Ok(Mode(0o644)));
        assert_eq!(Mode::parse("0o755"), Ok(Mode(0o755)));
        assert!(Mode::parse("rwx").unwrap_err().to_string().contains("rwx"));
        assert!(Mode::parse("17777").is_err());
        assert!(Mode::check(-1).is_err());
        assert!(Mode::check(1 << 40).is_err());
    }
}
