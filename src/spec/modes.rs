//! Modes written as decimal integers that look octal (`mode = 644`): TOML reads them as
//! decimal, so `644` would silently become `0o1204`. The parsed value cannot tell `644` from
//! `0o1204`, so the spec's text is read a second time with each mode's span, and the literal as
//! written is looked at.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Shadow {
    #[serde(default)]
    layer: Vec<ShadowLayer>,
}

#[derive(Deserialize)]
struct ShadowLayer {
    mode: Option<Spanned<toml::Value>>,
    dir_mode: Option<Spanned<toml::Value>>,
}

/// Refuse a `mode` or `dir_mode` of a `[[layer]]` written as a decimal integer of octal digits
/// (`644`, `0755` is not valid TOML): the error names `file`, the line and the field, with the
/// value it would have been and how to write what was meant. Decimal literals with an 8 or 9
/// (`420`'s cousins such as `493`) and single digits mean the same either way and are kept.
/// Text that does not parse is left to the spec's own parse, which reports it.
pub fn refuse_decimal_modes(text: &str, file: &Path) -> Result<()> {
    let Ok(shadow) = toml::from_str::<Shadow>(text) else {
        return Ok(());
    };
    for (i, l) in shadow.layer.iter().enumerate() {
        for (field, v) in [("mode", &l.mode), ("dir_mode", &l.dir_mode)] {
            let Some(v) = v else { continue };
            let raw = text.get(v.span()).unwrap_or_default().trim();
            let digits: String = raw.chars().filter(|c| *c != '_').collect();
            let octal_looking = digits.len() > 1
                && !digits.starts_with('0')
                && digits.chars().all(|c| ('0'..='7').contains(&c));
            if !octal_looking {
                continue;
            }
            let Ok(decimal) = digits.parse::<u64>() else {
                continue;
            };
            let line = text[..v.span().start].matches('\n').count() + 1;
            return Err(Error::Spec {
                file: file.to_owned(),
                message: format!(
                    "line {line}, [[layer]] #{n} field `{field}`: {field} = {raw} is decimal \
                     {decimal} ({decimal:#o}); write 0o{digits} or \"0{digits}\"",
                    n = i + 1
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_looking_decimals_are_refused_with_line_and_hint() {
        let f = Path::new("lamina.toml");
        let text = "[[layer]]\nsource = \"a\"\ndest = \"/x\"\nmode = 644\n";
        let e = refuse_decimal_modes(text, f).unwrap_err().to_string();
        assert!(
            e.contains("line 4") && e.contains("`mode`") && e.contains("0o1204"),
            "{e}"
        );
        assert!(e.contains("write 0o644 or \"0644\""), "{e}");
        let inline = "layer = [{ source = \"a\", dest = \"/x\", dir_mode = 755 }]\n";
        let e = refuse_decimal_modes(inline, f).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("`dir_mode`"), "{e}");
        for ok in ["0o644", "\"0644\"", "493", "0", "7"] {
            let t = format!("[[layer]]\nsource = \"a\"\ndest = \"/x\"\nmode = {ok}\n");
            assert!(refuse_decimal_modes(&t, f).is_ok(), "{ok}");
        }
    }
}
