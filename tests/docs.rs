//! The documentation's examples, run (tracker issue 18): every `sh` and `toml` block of the
//! README and of `docs/` carries a `<!-- docs-test: ... -->` marker; `run` blocks are executed
//! with the built lamina in a copy of `fixtures/`, `build` specs are built, `spec` and `build`
//! specs are validated against the shipped JSON Schema by Python's `jsonschema`, and `skip`
//! blocks must say why. Relative links between the pages must lead to files and headings that
//! exist.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every Markdown file under docs/ (the CI recipes included).
fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut out = vec![repo().join("README.md")];
    walk(&repo().join("docs"), &mut out);
    out.sort();
    out
}

#[test]
fn every_shell_and_toml_example_is_marked() {
    let mut unmarked = Vec::new();
    let mut counts = BTreeMap::<String, usize>::new();
    for page in pages() {
        for b in blocks(&page) {
            if !matches!(b.lang.as_str(), "sh" | "bash" | "toml" | "console") {
                continue;
            }
            match b.marker.as_deref() {
                None => unmarked.push(b.at()),
                Some(m) if m.starts_with("skip:") => {
                    assert!(
                        m.len() > "skip:".len() + 10,
                        "{}: say why it is skipped",
                        b.at()
                    );
                    *counts.entry("skip".into()).or_default() += 1;
                }
                Some(m @ ("run" | "run in fixtures")) if b.lang == "sh" => {
                    *counts.entry(m.into()).or_default() += 1
                }
                Some(m @ ("spec" | "build")) if b.lang == "toml" => {
                    *counts.entry(m.into()).or_default() += 1
                }
                Some(m) => panic!("{}: unknown marker `{m}` for a {} block", b.at(), b.lang),
            }
        }
    }
    assert!(
        unmarked.is_empty(),
        "examples without a docs-test marker: {unmarked:?}"
    );
    // The pages do run examples: not everything is skipped.
    assert!(counts.get("run").copied().unwrap_or(0) >= 4, "{counts:?}");
    assert!(counts.get("build").copied().unwrap_or(0) >= 1, "{counts:?}");
}

#[test]
fn the_run_examples_run() {
    for page in pages() {
        let runs: Vec<Block> = blocks(&page)
            .into_iter()
            .filter(|b| {
                b.lang == "sh" && matches!(b.marker.as_deref(), Some("run" | "run in fixtures"))
            })
            .collect();
        if runs.is_empty() {
            continue;
        }
        // One sandbox per page: a page's examples follow on from each other.
        let sandbox = DocSandbox::new();
        for b in runs {
            let cwd = if b.marker.as_deref() == Some("run in fixtures") {
                "fixtures"
            } else {
                "."
            };
            let out = sandbox.bash(&b.text, cwd, &[], Duration::from_secs(180));
            assert!(
                out.status.success(),
                "the example at {} failed:\n{}\n{}",
                b.at(),
                b.text,
                describe(&out)
            );
            assert_no_panic(&out);
        }
    }
}

#[test]
fn the_spec_examples_are_valid_and_the_build_examples_build() {
    let sandbox = DocSandbox::new();
    let mut specs = Vec::new();
    let mut origin = BTreeMap::new();
    for page in pages() {
        for b in blocks(&page) {
            let Some(m @ ("spec" | "build")) = b.marker.as_deref() else {
                continue;
            };
            // Beside the fixture's files, so a build example finds its sources and base.
            let file = sandbox
                .dir
                .path()
                .join(format!("fixtures/example-{}.toml", specs.len()));
            fs::write(&file, &b.text).unwrap();
            if m == "build" {
                let to = format!("oci:out-example-{}:latest", specs.len());
                let out = lamina(
                    &[
                        "build",
                        "-f",
                        file.to_str().unwrap(),
                        "--to",
                        &to,
                        "--quiet",
                    ],
                    sandbox.dir.path(),
                    &[],
                );
                assert!(
                    out.status.success(),
                    "the spec at {} does not build:\n{}\n{}",
                    b.at(),
                    b.text,
                    describe(&out)
                );
                parse_digest(&out);
            }
            origin.insert(file.clone(), b.at());
            specs.push(file);
        }
    }
    assert!(!specs.is_empty(), "no spec example found");
    for (file, errors) in schema_errors(&shipped_schema(), &specs) {
        assert!(
            errors.is_empty(),
            "the spec at {} is not valid against schema/lamina.schema.json: {errors:?}",
            origin[&file]
        );
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(page: &Path) -> Vec<String> {
    let text = fs::read_to_string(page).unwrap();
    let mut in_fence = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn relative_links_lead_to_pages_and_headings_that_exist() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        for piece in text.split("](").skip(1) {
            let Some(target) = piece.split(')').next() else {
                continue;
            };
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (path, frag) = target.split_once('#').unwrap_or((target, ""));
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            if !file.exists() {
                broken.push(format!("{}: {target}", page.display()));
                continue;
            }
            if !frag.is_empty() && !anchors(&file).iter().any(|a| a == frag) {
                broken.push(format!("{}: {target} (no such heading)", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}
