//! The `[deploy]` section of `lamina.toml`: which Lambda function(s) the built code goes to, and
//! their configuration. One function is `[deploy] function_name = "..."`; several functions
//! sharing the one build are `[[deploy.functions]]` tables, each with its own `function_name`
//! and any of the fields below, which override the section's for that function.

use std::collections::BTreeMap;

use serde::Deserialize;

/// How Lambda holds the code: an ECR image or a .zip package.
#[derive(Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// A container image in ECR, deployed by digest.
    Image,
    /// A .zip deployment package (uploaded directly, or through S3).
    Zip,
}

/// `[deploy]` (and each `[[deploy.functions]]` entry) as written.
#[derive(Deserialize, schemars::JsonSchema, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// The function's name (or ARN).
    pub function_name: Option<String>,
    /// `image` (the default) or `zip`; only in `[deploy]`, shared by every function.
    pub package: Option<PackageKind>,
    /// S3 bucket for .zip packages (needed over Lambda's direct-upload limit); only in `[deploy]`.
    pub s3_bucket: Option<String>,
    /// Publish `[function] layers` as Lambda layers (a version only when a layer's zip
    /// changed) and attach them, for `package = "zip"`; only in `[deploy]`.
    pub publish_layers: Option<bool>,
    /// Execution role ARN (required to create a function).
    pub role: Option<String>,
    /// Memory in MB.
    pub memory: Option<i32>,
    /// Timeout in seconds.
    pub timeout: Option<i32>,
    /// Description.
    pub description: Option<String>,
    /// Ephemeral storage (/tmp) in MB.
    pub ephemeral_storage: Option<i32>,
    /// Lambda environment variables (merged: section, then the function's).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Lambda layer version ARNs (.zip functions).
    pub layers: Option<Vec<String>>,
    /// The handler: `Handler` for a .zip function, `ImageConfig.Command` for an image function
    /// (default: `[function] handler` for zips, the image's CMD for images).
    pub handler: Option<String>,
    /// `ImageConfig.EntryPoint` for an image function (default: the image's).
    pub entrypoint: Option<Vec<String>>,
    /// `ImageConfig.WorkingDirectory` for an image function (default: the image's).
    pub workdir: Option<String>,
    /// Several functions deployed from the one build (`[[deploy.functions]]`).
    #[serde(default)]
    pub functions: Vec<DeploySpec>,
}

impl DeploySpec {
    /// The entries of `[deploy]`: its `[[deploy.functions]]`, each over the section's values,
    /// or the section itself when it has none. An entry's `functions`, `package` or
    /// `s3_bucket` is refused (they are shared by the whole deploy): the message names it.
    pub fn entries(&self) -> Result<Vec<DeploySpec>, String> {
        if self.functions.is_empty() {
            return Ok(vec![DeploySpec {
                functions: Vec::new(),
                ..self.clone()
            }]);
        }
        if self.function_name.is_some() {
            return Err(
                "[deploy] has both `function_name` and [[deploy.functions]]: name each function in its [[deploy.functions]] table".into(),
            );
        }
        self.functions
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let at = format!("[[deploy.functions]] #{}", i + 1);
                if !f.functions.is_empty()
                    || f.package.is_some()
                    || f.s3_bucket.is_some()
                    || f.publish_layers.is_some()
                {
                    return Err(format!(
                        "{at}: `functions`, `package`, `s3_bucket` and `publish_layers` belong in [deploy], shared by every function"
                    ));
                }
                if f.function_name.is_none() {
                    return Err(format!("{at}: `function_name` is missing"));
                }
                let mut environment = self.environment.clone();
                environment.extend(f.environment.clone());
                Ok(DeploySpec {
                    function_name: f.function_name.clone(),
                    package: self.package,
                    s3_bucket: self.s3_bucket.clone(),
                    publish_layers: self.publish_layers,
                    role: f.role.clone().or_else(|| self.role.clone()),
                    memory: f.memory.or(self.memory),
                    timeout: f.timeout.or(self.timeout),
                    description: f.description.clone().or_else(|| self.description.clone()),
                    ephemeral_storage: f.ephemeral_storage.or(self.ephemeral_storage),
                    environment,
                    layers: f.layers.clone().or_else(|| self.layers.clone()),
                    handler: f.handler.clone().or_else(|| self.handler.clone()),
                    entrypoint: f.entrypoint.clone().or_else(|| self.entrypoint.clone()),
                    workdir: f.workdir.clone().or_else(|| self.workdir.clone()),
                    functions: Vec::new(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_inherit_the_section_and_override_it() {
        let d: DeploySpec = toml::from_str(
            r#"
            role = "arn:aws:iam::123456789012:role/r"
            memory = 256
            environment = { A = "1", B = "2" }
            [[functions]]
            function_name = "one"
            [[functions]]
            function_name = "two"
            memory = 512
            environment = { B = "3" }
            "#,
        )
        .unwrap();
        let e = d.entries().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].memory, Some(256));
        assert_eq!(e[1].memory, Some(512));
        assert_eq!(
            e[1].role.as_deref(),
            Some("arn:aws:iam::123456789012:role/r")
        );
        assert_eq!(e[1].environment["A"], "1");
        assert_eq!(e[1].environment["B"], "3");
        let bad: DeploySpec =
            toml::from_str("[[functions]]\nfunction_name = \"x\"\npackage = \"zip\"").unwrap();
        assert!(bad.entries().unwrap_err().contains("package"));
        let unnamed: DeploySpec = toml::from_str("[[functions]]\nmemory = 1").unwrap();
        assert!(unnamed.entries().unwrap_err().contains("function_name"));
    }
}
