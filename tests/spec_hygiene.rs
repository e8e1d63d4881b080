//! The first hour with lamina.toml (tracker issue 13): a decimal `mode = 644`, `cmd` as a
//! string, a runtime name without its `.x`, `lamina init`'s file mode and guesses, and one way
//! of printing a platform in `check` and `inspect`. Each test runs the real binary.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::*;
use tempfile::TempDir;

/// A project directory with `f/a.txt` and `lamina.toml` holding `spec`.
fn project(spec: &str) -> TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("f")).unwrap();
    fs::write(d.path().join("f/a.txt"), "hi\n").unwrap();
    fs::write(d.path().join("lamina.toml"), spec).unwrap();
    d
}

/// Exit status 2 (a spec error), no panic, and every piece of `expect` in stderr.
fn assert_spec_error(out: &Output, expect: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "{}", describe(out));
    assert_no_panic(out);
    let err = stderr_of(out);
    for e in expect {
        assert!(err.contains(e), "stderr should mention {e:?}:\n{err}");
    }
}

const LAYER_SPEC: &str = "base = \"scratch\"\nto = \"oci:out:latest\"\n\n[[layer]]\n\
                          source = \"f\"\ndest = \"/x\"\n";

#[test]
fn a_decimal_mode_that_looks_octal_is_refused_with_line_field_and_hint() {
    let d = project(&format!("{LAYER_SPEC}mode = 644\n"));
    let out = lamina(&["build"], d.path(), &[]);
    assert_spec_error(
        &out,
        &[
            "lamina.toml",
            "line 7",
            "`mode`",
            "mode = 644 is decimal 644 (0o1204)",
            "write 0o644 or \"0644\"",
        ],
    );
    assert!(!d.path().join("out").exists(), "nothing written");

    let d = project(&format!("{LAYER_SPEC}dir_mode = 755\n"));
    let out = lamina(&["build"], d.path(), &[]);
    assert_spec_error(&out, &["lamina.toml", "line 7", "`dir_mode`", "0o1363"]);

    // The octal spellings still build.
    for ok in ["0o644", "\"0644\""] {
        let d = project(&format!("{LAYER_SPEC}mode = {ok}\n"));
        lamina_ok(&["build"], d.path(), &[]);
    }
}

#[test]
fn cmd_and_entrypoint_take_strings_as_the_flags_do() {
    let d = project(&format!(
        "{LAYER_SPEC}\n[config]\ncmd = \"app.handler\"\nentrypoint = '[\"/bin/sh\", \"-c\"]'\n"
    ));
    lamina_ok(&["build"], d.path(), &[]);
    let i = parse_json(&lamina_ok(
        &["inspect", "--json", "oci:out:latest"],
        d.path(),
        &[],
    ));
    let c = &i["imageConfig"]["config"];
    assert_eq!(c["Cmd"], serde_json::json!(["app.handler"]), "{i}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]), "{i}");

    // A string that starts like a JSON array but is not one is refused, with its line.
    let d = project(&format!("{LAYER_SPEC}\n[config]\ncmd = \"[oops\"\n"));
    let out = lamina(&["build"], d.path(), &[]);
    assert_spec_error(&out, &["lamina.toml", "line 9", "cmd", "[oops"]);
}

#[test]
fn an_unknown_runtime_names_its_line_and_the_nearest_known_one() {
    let d = project(
        "to = \"oci:out:latest\"\n[function]\nruntime = \"nodejs20\"\nhandler = \"index.handler\"\ncode = \"f\"\n",
    );
    let out = lamina(&["build"], d.path(), &[]);
    assert_spec_error(
        &out,
        &[
            "lamina.toml",
            "line 3",
            "unknown Lambda runtime `nodejs20`",
            "did you mean `nodejs20.x`?",
        ],
    );
}

#[test]
fn init_writes_lamina_toml_0644() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("app.py"), "").unwrap();
    lamina_ok(&["init"], d.path(), &[]);
    let mode = fs::metadata(d.path().join("lamina.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o644, "lamina.toml mode {mode:o}");
}

#[test]
fn init_guesses_java_ruby_and_dotnet() {
    for (file, runtime) in [
        ("pom.xml", "java21"),
        ("build.gradle", "java21"),
        ("function.jar", "java21"),
        ("Gemfile", "ruby3.4"),
        ("app.rb", "ruby3.4"),
        ("Function.csproj", "dotnet8"),
        ("Function.runtimeconfig.json", "dotnet8"),
    ] {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(file), "").unwrap();
        lamina_ok(&["init"], d.path(), &[]);
        let text = fs::read_to_string(d.path().join("lamina.toml")).unwrap();
        assert!(
            text.contains(&format!("runtime = \"{runtime}\"")),
            "{file} should give {runtime}:\n{text}"
        );
        assert!(
            !text.contains("\nbootstrap ="),
            "{file}: no bootstrap\n{text}"
        );
    }
}

#[test]
fn check_and_inspect_print_an_arm64_platform_the_same_way() {
    let d = project(&format!(
        "platform = \"linux/arm64\"\n{LAYER_SPEC}\n[config]\ncmd = \"app.handler\"\n"
    ));
    lamina_ok(&["build"], d.path(), &[]);
    let config = image_config(d.path());
    assert_eq!(
        config["variant"], "v8",
        "the config names the variant: {config}"
    );

    let inspected = parse_json(&lamina_ok(
        &["inspect", "--json", "oci:out:latest"],
        d.path(),
        &[],
    ));
    assert_eq!(inspected["platform"], "linux/arm64");
    let out = lamina(&["check", "--json", "oci:out:latest"], d.path(), &[]);
    let checked = parse_json(&out);
    assert_eq!(checked["platform"], "linux/arm64", "{checked}");
    let verdict = stderr_of(&out);
    assert!(
        verdict.contains(", linux/arm64)") && !verdict.contains("arm64/v8"),
        "{verdict}"
    );
}

/// The image config of the layout `out` in `dir`, through its index and manifest.
fn image_config(dir: &Path) -> serde_json::Value {
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = fs::read(dir.join("out/blobs/sha256").join(hex)).unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("out/index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    blob(manifest["config"]["digest"].as_str().unwrap())
}
