//! Target platforms: OCI `os/arch[/variant]`, with Lambda's architecture names accepted as aliases.

use std::fmt;
use std::str::FromStr;

/// The platforms lamina builds for: the two instruction sets Lambda runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Platform {
    /// `linux/amd64`, Lambda's `x86_64`: the default, as in Lambda.
    #[default]
    LinuxAmd64,
    /// `linux/arm64` (variant `v8`), Lambda's `arm64`.
    LinuxArm64,
}

impl Platform {
    /// Every platform lamina builds for.
    pub const ALL: [Platform; 2] = [Platform::LinuxAmd64, Platform::LinuxArm64];

    /// OCI/Go architecture name.
    pub fn arch(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "amd64",
            Platform::LinuxArm64 => "arm64",
        }
    }

    /// OCI/Go operating-system name (always `linux`: Lambda runs nothing else).
    pub fn os(self) -> &'static str {
        "linux"
    }

    /// Lambda's name for the architecture (`Architectures` in the Lambda API).
    pub fn lambda_name(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "x86_64",
            Platform::LinuxArm64 => "arm64",
        }
    }

    /// Does an OCI platform (as found in an index or a config) describe this one?
    /// arm64 matches with no variant or `v8` (both are used for the same thing).
    pub fn matches(self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        os == self.os()
            && arch == self.arch()
            && match self {
                Platform::LinuxAmd64 => variant.is_none_or(|v| v.is_empty() || v == "v1"),
                Platform::LinuxArm64 => variant.is_none_or(|v| v.is_empty() || v == "v8"),
            }
    }

    /// As the `oci-spec` type, for index entries and configs.
    pub fn to_oci(self) -> oci_spec::image::Platform {
        let mut b = oci_spec::image::PlatformBuilder::default()
            .os(oci_spec::image::Os::Linux)
            .architecture(match self {
                Platform::LinuxAmd64 => oci_spec::image::Arch::Amd64,
                Platform::LinuxArm64 => oci_spec::image::Arch::ARM64,
            });
        if self == Platform::LinuxArm64 {
            b = b.variant("v8");
        }
        b.build().expect("all required platform fields are set")
    }
}

/// `os/arch[/variant]` of any platform: the one way every command prints a platform
/// (`check`, `inspect`, `build`'s report, messages about what a base offers). A variant that is
/// the architecture's default (`arm64/v8`, `amd64/v1`) is left out, so an image whose config
/// says `arm64` + `v8` prints as `linux/arm64`, as [`Platform`]'s `Display` does.
pub fn describe(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) if !v.is_empty() && !is_default_variant(arch, v) => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    }
}

/// The variant an architecture has when none is named (OCI image spec: `arm64` is `v8`).
fn is_default_variant(arch: &str, variant: &str) -> bool {
    matches!((arch, variant), ("arm64", "v8") | ("amd64", "v1"))
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os(), self.arch())
    }
}

/// Why a string is not a [`Platform`]; the message names the string and the accepted names.
/// The caller turns it into the [`Error`](crate::error::Error) kind that fits (a flag, a spec
/// field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown platform `{0}`: lamina builds for linux/amd64 (x86_64) or linux/arm64 (aarch64), the architectures Lambda runs"
)]
pub struct ParsePlatformError(String);

impl FromStr for Platform {
    type Err = ParsePlatformError;
    fn from_str(s: &str) -> Result<Self, ParsePlatformError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "linux/amd64" | "amd64" | "x86_64" | "linux/x86_64" | "linux/amd64/v1" => {
                Ok(Platform::LinuxAmd64)
            }
            "linux/arm64" | "arm64" | "aarch64" | "linux/aarch64" | "linux/arm64/v8" => {
                Ok(Platform::LinuxArm64)
            }
            _ => Err(ParsePlatformError(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oci_and_lambda_names() {
        for s in ["linux/amd64", "x86_64", "amd64", "LINUX/AMD64"] {
            assert_eq!(s.parse::<Platform>().unwrap(), Platform::LinuxAmd64, "{s}");
        }
        for s in ["linux/arm64", "aarch64", "arm64", "linux/arm64/v8"] {
            assert_eq!(s.parse::<Platform>().unwrap(), Platform::LinuxArm64, "{s}");
        }
        let e = "linux/s390x".parse::<Platform>().unwrap_err();
        assert!(e.to_string().contains("linux/s390x"), "{e}");
        assert!("windows/amd64".parse::<Platform>().is_err());
    }

    #[test]
    fn matching_accepts_the_arm64_variants() {
        let p = Platform::LinuxArm64;
        assert!(p.matches("linux", "arm64", None));
        assert!(p.matches("linux", "arm64", Some("v8")));
        assert!(!p.matches("linux", "arm64", Some("v7")));
        assert!(!p.matches("linux", "amd64", None));
        assert!(!Platform::LinuxAmd64.matches("windows", "amd64", None));
    }
}
