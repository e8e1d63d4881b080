//! A function's configuration as the spec wants it, compared field by field with what Lambda
//! has, so that only the fields that differ are sent (and nothing when none does). A field the
//! spec leaves unset is Lambda's business and never compared.

use std::collections::BTreeMap;

use aws_sdk_lambda::types::{
    Environment, EphemeralStorage, FunctionConfiguration, ImageConfig, Runtime,
};
use serde::Serialize;

/// The configuration the spec and flags ask for; `None` leaves a field as Lambda has it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionConfig {
    /// Execution role ARN (`Role`); required to create a function.
    pub role: Option<String>,
    /// `MemorySize` in MB.
    pub memory: Option<i32>,
    /// `Timeout` in seconds.
    pub timeout: Option<i32>,
    /// `Description`.
    pub description: Option<String>,
    /// `EphemeralStorage.Size` in MB.
    pub ephemeral_storage: Option<i32>,
    /// `Environment.Variables` (the whole set; an empty map leaves them alone).
    pub environment: BTreeMap<String, String>,
    /// `Layers` (layer version ARNs, .zip functions).
    pub layers: Option<Vec<String>>,
    /// `Handler` of a .zip function; `ImageConfig.Command` (as its one element) of an image
    /// function.
    pub handler: Option<String>,
    /// `Runtime` of a .zip function.
    pub runtime: Option<String>,
    /// `ImageConfig.EntryPoint` of an image function.
    pub entrypoint: Option<Vec<String>>,
    /// `ImageConfig.WorkingDirectory` of an image function.
    pub workdir: Option<String>,
}

/// The fields that differ from Lambda's (named as in the Lambda API), with their wanted values.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// The wanted values of the fields that differ, `None` for the rest.
    pub config: FunctionConfig,
    /// The whole ImageConfig to send (Lambda replaces it as one), when any part differs.
    pub image_config: Option<ImageConfig>,
    /// The API names of the fields that differ, in a fixed order.
    pub fields: Vec<&'static str>,
}

fn differs<T: PartialEq>(want: &Option<T>, have: Option<T>) -> bool {
    want.as_ref().is_some_and(|w| Some(w) != have.as_ref())
}

/// The ImageConfig to send for an image function: the wanted parts over what Lambda has;
/// `None` when the spec sets no part of it.
fn image_config(want: &FunctionConfig, have: Option<&ImageConfig>) -> Option<ImageConfig> {
    if want.handler.is_none() && want.entrypoint.is_none() && want.workdir.is_none() {
        return None;
    }
    let keep = |v: Option<&[String]>| v.filter(|v| !v.is_empty()).map(<[String]>::to_vec);
    let entry = want
        .entrypoint
        .clone()
        .or_else(|| keep(have.map(ImageConfig::entry_point)));
    let command = want
        .handler
        .clone()
        .map(|h| vec![h])
        .or_else(|| keep(have.map(ImageConfig::command)));
    let workdir = want
        .workdir
        .clone()
        .or_else(|| have.and_then(|h| h.working_directory().map(str::to_owned)));
    Some(
        ImageConfig::builder()
            .set_entry_point(entry)
            .set_command(command)
            .set_working_directory(workdir)
            .build(),
    )
}

/// Compare `want` with Lambda's configuration `have` (`image`: an image function, whose
/// handler is its ImageConfig's command).
pub fn diff(want: &FunctionConfig, have: &FunctionConfiguration, image: bool) -> Changes {
    let mut ch = Changes::default();
    let c = &mut ch.config;
    macro_rules! field {
        ($name:literal, $f:ident, $have:expr) => {
            if differs(&want.$f, $have) {
                c.$f = want.$f.clone();
                ch.fields.push($name);
            }
        };
    }
    field!("Role", role, have.role().map(str::to_owned));
    field!("MemorySize", memory, have.memory_size());
    field!("Timeout", timeout, have.timeout());
    field!(
        "Description",
        description,
        Some(have.description().unwrap_or_default().to_owned())
    );
    field!(
        "EphemeralStorage",
        ephemeral_storage,
        have.ephemeral_storage().map(EphemeralStorage::size)
    );
    let have_env: BTreeMap<String, String> = have
        .environment()
        .and_then(|e| e.variables())
        .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    if !want.environment.is_empty() && want.environment != have_env {
        c.environment = want.environment.clone();
        ch.fields.push("Environment");
    }
    if !image {
        let layers: Vec<String> = have
            .layers()
            .iter()
            .filter_map(|l| l.arn().map(str::to_owned))
            .collect();
        field!("Layers", layers, Some(layers));
        field!("Handler", handler, have.handler().map(str::to_owned));
        field!(
            "Runtime",
            runtime,
            have.runtime().map(|r| r.as_str().to_owned())
        );
    } else {
        let have_ic = have.image_config_response().and_then(|r| r.image_config());
        if let Some(ic) = image_config(want, have_ic) {
            let same = have_ic.is_some_and(|h| {
                h.entry_point() == ic.entry_point()
                    && h.command() == ic.command()
                    && h.working_directory() == ic.working_directory()
            });
            if !same {
                ch.image_config = Some(ic);
                ch.fields.push("ImageConfig");
            }
        }
    }
    ch
}

/// Everything `want` sets, as changes: what a new function is created with.
pub fn all(want: &FunctionConfig, image: bool) -> Changes {
    let mut config = want.clone();
    if image {
        config.handler = None;
        config.runtime = None;
        config.layers = None;
    }
    Changes {
        image_config: if image {
            image_config(want, None)
        } else {
            None
        },
        config,
        fields: Vec::new(),
    }
}

/// Set the changed fields on a CreateFunction or UpdateFunctionConfiguration request (their
/// builders share the setters).
macro_rules! apply_changes {
    ($req:expr, $ch:expr) => {{
        let ch: &$crate::deploy::config::Changes = $ch;
        let c = &ch.config;
        let mut req = $req
            .set_role(c.role.clone())
            .set_memory_size(c.memory)
            .set_timeout(c.timeout)
            .set_description(c.description.clone())
            .set_ephemeral_storage($crate::deploy::config::ephemeral(c.ephemeral_storage))
            .set_layers(c.layers.clone())
            .set_handler(c.handler.clone())
            .set_runtime($crate::deploy::config::runtime(c.runtime.as_deref()))
            .set_image_config(ch.image_config.clone());
        if !c.environment.is_empty() {
            req = req.environment($crate::deploy::config::environment(&c.environment));
        }
        req
    }};
}
pub(crate) use apply_changes;

/// `EphemeralStorage` of `size` MB.
pub fn ephemeral(size: Option<i32>) -> Option<EphemeralStorage> {
    size.and_then(|s| EphemeralStorage::builder().size(s).build().ok())
}

/// `Runtime` by its API name.
pub fn runtime(name: Option<&str>) -> Option<Runtime> {
    name.map(Runtime::from)
}

/// `Environment` with `vars`.
pub fn environment(vars: &BTreeMap<String, String>) -> Environment {
    Environment::builder()
        .set_variables(Some(
            vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_lambda::types::{EnvironmentResponse, ImageConfigResponse};

    fn have() -> FunctionConfiguration {
        FunctionConfiguration::builder()
            .role("arn:aws:iam::123456789012:role/r")
            .memory_size(128)
            .timeout(3)
            .environment(EnvironmentResponse::builder().variables("A", "1").build())
            .image_config_response(
                ImageConfigResponse::builder()
                    .image_config(ImageConfig::builder().command("app.handler").build())
                    .build(),
            )
            .build()
    }

    #[test]
    fn only_changed_fields_are_sent() {
        let mut want = FunctionConfig {
            role: Some("arn:aws:iam::123456789012:role/r".into()),
            memory: Some(128),
            environment: [("A".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        };
        assert!(diff(&want, &have(), true).fields.is_empty());
        want.memory = Some(256);
        want.description = Some("new".into());
        let ch = diff(&want, &have(), true);
        assert_eq!(ch.fields, ["MemorySize", "Description"]);
        assert_eq!(ch.config.memory, Some(256));
        assert_eq!(ch.config.role, None);
        want.handler = Some("app.handler".into());
        assert_eq!(
            diff(&want, &have(), true).fields,
            ["MemorySize", "Description"]
        );
        want.handler = Some("other.handler".into());
        let ch = diff(&want, &have(), true);
        assert!(ch.fields.contains(&"ImageConfig"));
        assert_eq!(ch.image_config.unwrap().command(), ["other.handler"]);
        want.environment.insert("B".into(), "2".into());
        assert!(diff(&want, &have(), true).fields.contains(&"Environment"));
    }
}
