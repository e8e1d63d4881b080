//! What one layer is made of, as a spec describes it: a source placed at an in-image path.

use std::path::PathBuf;

use serde::Deserialize;

/// One `[[layer]]`: a file, directory or .zip placed at `dest`.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    pub source: PathBuf,
    pub dest: String,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub mode: Option<Mode>,
    pub dir_mode: Option<Mode>,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

/// A Unix permission mode: a TOML integer (`0o644`) or an octal string (`"0644"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        let v = u32::from_str_radix(digits, 8)
            .map_err(|_| format!("mode `{s}` is not an octal number such as \"0644\""))?;
        Mode::check(v)
    }
    fn check(v: u32) -> Result<Mode, String> {
        if v > 0o7777 {
            Err(format!(
                "mode {v:#o} is out of range: permission bits go up to 0o7777"
            ))
        } else {
            Ok(Mode(v))
        }
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
            Raw::Int(i) if i < 0 => Err(format!("mode {i} is negative")),
            Raw::Int(i) => Mode::check(i as u32),
            Raw::Str(s) => Mode::parse(&s),
        };
        r.map_err(serde::de::Error::custom)
    }
}

/// Check an absolute in-image path and return it without its leading `/`.
pub fn image_path(p: &str, field: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{field} `{p}` must be an absolute path in the image (start with /)"
        ));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("{field} `{p}` must not contain `..`")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}
