//! `apply -f FILE|DIR|-` and `delete NAME...`: specs in, servers out.
//! A file may hold one spec or many (YAML documents separated by `---`, or
//! a JSON/YAML list); a directory contributes its `*.yaml`, `*.yml` and
//! `*.json` files in name order; `-` is standard input. Each spec is sent
//! on its own, so one refused spec does not stop the others; the command
//! fails at the end if any was refused.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::Context;
use crate::cli::{ApplyArgs, DeleteArgs};
use crate::output;

/// One spec to send, and where it came from (for messages).
#[derive(Debug)]
pub(crate) struct SpecDocument {
    /// `servers.yaml`, `servers.yaml (document 2)`, `stdin`.
    pub(crate) origin: String,
    /// The spec, re-written as YAML (mcpd parses and validates it).
    pub(crate) yaml: String,
}

/// The files `path` names: itself, or a directory's spec files by name.
fn files_of(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let entry = entry.with_context(|| format!("reading {}", path.display()))?;
        let file = entry.path();
        let is_spec = file
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if is_spec && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("{} holds no *.yaml, *.yml or *.json file", path.display());
    }
    Ok(files)
}

/// The specs in one text: each YAML document (JSON is YAML too), and each
/// item of a document that is a list. Empty documents are skipped.
pub(crate) fn split_specs(text: &str, origin: &str) -> anyhow::Result<Vec<SpecDocument>> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(document)
            .with_context(|| format!("{origin}: not YAML or JSON"))?;
        match value {
            serde_norway::Value::Null => {}
            serde_norway::Value::Sequence(items) => documents.extend(items),
            other => documents.push(other),
        }
    }
    let many = documents.len() > 1;
    documents
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let origin = if many {
                format!("{origin} (spec {})", i + 1)
            } else {
                origin.to_owned()
            };
            let yaml = serde_norway::to_string(&spec)
                .with_context(|| format!("{origin}: writing the spec"))?;
            Ok(SpecDocument { origin, yaml })
        })
        .collect()
}

/// Every spec the `-f` arguments name, in order.
fn read_specs(paths: &[PathBuf]) -> anyhow::Result<Vec<SpecDocument>> {
    let mut specs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            specs.extend(split_specs(&text, "stdin")?);
            continue;
        }
        for file in files_of(path)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            specs.extend(split_specs(&text, &file.display().to_string())?);
        }
    }
    if specs.is_empty() {
        bail!("no spec found in {paths:?}");
    }
    Ok(specs)
}

/// Runs `apply`.
pub(crate) async fn run_apply(ctx: &Context, args: &ApplyArgs) -> anyhow::Result<()> {
    let specs = read_specs(&args.files)?;
    let mut applied = Vec::new();
    let mut refused = 0;
    for spec in specs {
        match ctx.client.apply_yaml(spec.yaml, &spec.origin).await {
            Ok(answer) => {
                if ctx.output.is_none() {
                    output::emit(&format!(
                        "server/{} {}\n",
                        answer.status.name, answer.outcome
                    ))?;
                }
                applied.push(answer);
            }
            Err(e) => {
                refused += 1;
                eprintln!("{}: {}", spec.origin, crate::describe_error(&e));
            }
        }
    }
    if let Some(format) = ctx.output {
        let body = serde_json::json!({ "applied": applied });
        output::emit(&output::structured(&body, format)?)?;
    }
    if refused > 0 {
        bail!("{refused} spec(s) were not applied");
    }
    Ok(())
}

/// Runs `delete`.
pub(crate) async fn run_delete(ctx: &Context, args: &DeleteArgs) -> anyhow::Result<()> {
    for name in &args.names {
        ctx.client.delete(name).await?;
        output::emit(&format!("server/{name} deleted\n"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_json_each_give_specs() {
        let yaml = "name: a\n---\n---\nname: b\n";
        let specs = split_specs(yaml, "f.yaml").unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].origin, "f.yaml (spec 2)");
        assert!(specs[1].yaml.contains("name: b"));

        let json = r#"[{"name": "a"}, {"name": "c"}]"#;
        let specs = split_specs(json, "f.json").unwrap();
        assert_eq!(specs.len(), 2);
        assert!(specs[1].yaml.contains("name: c"));

        let one = split_specs(r#"{"name": "solo"}"#, "s.json").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].origin, "s.json");

        assert!(split_specs("name: [unclosed", "bad.yaml").is_err());
    }
}
