//! Model kinds, recognised from a version directory's own files (or its `modelhost.json`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The kinds of model this server serves: every model type of the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    TextEmbedder,
    TextClassifier,
    CrossEncoder,
    MlpClassifier,
    ImageClassifier,
    Tabular,
}

impl Kind {
    pub(crate) const ALL: [Kind; 6] = [
        Kind::TextEmbedder,
        Kind::TextClassifier,
        Kind::CrossEncoder,
        Kind::MlpClassifier,
        Kind::ImageClassifier,
        Kind::Tabular,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::TextEmbedder => "text-embedder",
            Kind::TextClassifier => "text-classifier",
            Kind::CrossEncoder => "cross-encoder",
            Kind::MlpClassifier => "mlp-classifier",
            Kind::ImageClassifier => "image-classifier",
            Kind::Tabular => "tabular",
        }
    }

    /// The kind of a version directory: `modelhost.json`'s `kind` if there is one, else
    /// guessed from the files.
    pub(crate) fn of(dir: &Path) -> Result<Kind, String> {
        let manifest = dir.join("modelhost.json");
        if manifest.is_file() {
            #[derive(Deserialize)]
            struct Manifest {
                kind: String,
            }
            let text = std::fs::read_to_string(&manifest)
                .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
            let m: Manifest = serde_json::from_str(&text)
                .map_err(|e| format!("invalid {}: {e}", manifest.display()))?;
            return Kind::ALL
                .into_iter()
                .find(|k| k.name() == m.kind)
                .ok_or_else(|| {
                    let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                    format!(
                        "{}: unknown kind `{}`; use one of {names:?}",
                        manifest.display(),
                        m.kind
                    )
                });
        }
        let has = |f: &str| dir.join(f).is_file();
        let config = dir.join("config.json");
        if has("tabular.json") {
            Ok(Kind::Tabular)
        } else if has("model.json") && has("model.safetensors") {
            Ok(Kind::MlpClassifier)
        } else if has("tokenizer.json") && sequence_classification(&config) {
            if relevance_head(&config) {
                Ok(Kind::CrossEncoder)
            } else {
                Ok(Kind::TextClassifier)
            }
        } else if has("tokenizer.json") && (has("modules.json") || has("config.json")) {
            Ok(Kind::TextEmbedder)
        } else if image_network(&config) {
            Ok(Kind::ImageClassifier)
        } else {
            Err(format!(
                "{}: not a model directory this server knows (a sentence-transformers directory, \
                 a transformers text classifier or cross-encoder, a timm ResNet or Hugging Face \
                 ViT config.json, tabular.json, model.json + model.safetensors, or a \
                 modelhost.json naming the kind)",
                dir.display()
            ))
        }
    }
}

/// The parts of a Hugging Face `config.json` that tell the kinds apart.
#[derive(Deserialize, Default)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    id2label: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    problem_type: Option<String>,
    /// timm's network name (`resnet50`).
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    model_type: Option<String>,
}

/// `config.json`, or `None` when it is missing or unreadable: loading the directory then
/// reports what is wrong with it.
fn read_config(config: &Path) -> Option<HfConfig> {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
}

/// Whether a sequence-classification head scores relevance: one label (`num_labels`, else
/// the size of `id2label`), not multi-label, as sentence-transformers saves a
/// cross-encoder.
pub(crate) fn relevance_head(config: &Path) -> bool {
    read_config(config).is_some_and(|c| {
        let labels = c
            .num_labels
            .or_else(|| c.id2label.as_ref().map(|m| m.len()))
            .unwrap_or(2);
        labels == 1 && c.problem_type.as_deref() != Some("multi_label_classification")
    })
}

/// Whether `config.json` names an image network: timm's `architecture` or a Hugging Face
/// ViT (`model_type` `vit`).
pub(crate) fn image_network(config: &Path) -> bool {
    read_config(config)
        .is_some_and(|c| c.architecture.is_some() || c.model_type.as_deref() == Some("vit"))
}

/// Whether a Hugging Face `config.json` declares a sequence-classification head (as
/// transformers saves a fine-tuned classifier). Unreadable files say no: loading as an
/// embedder then reports what is wrong with them.
pub(crate) fn sequence_classification(config: &Path) -> bool {
    read_config(config).is_some_and(|c| {
        c.architectures
            .iter()
            .any(|a| a.ends_with("ForSequenceClassification"))
    })
}

/// Version directories under `root` whose kind cannot be told, with the reason.
pub(crate) fn unrecognised(root: &Path) -> Vec<String> {
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    dirs(root)
        .iter()
        .flat_map(|model| dirs(model))
        .filter_map(|version| Kind::of(&version).err())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory holding `files` (name, contents).
    fn dir_with(tag: &str, files: &[(&str, String)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("modelhost-kind-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    /// `tokenizer.json` and a sequence-classification `config.json` with `extra` fields.
    fn head(extra: &str) -> Vec<(&'static str, String)> {
        let config = format!(r#"{{"architectures": ["BertForSequenceClassification"]{extra}}}"#);
        vec![("tokenizer.json", "{}".into()), ("config.json", config)]
    }

    fn files(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        list.iter().map(|(n, t)| (*n, t.to_string())).collect()
    }

    #[test]
    fn each_kind_is_told_from_its_own_files() {
        let cases = [
            (
                "embedder",
                files(&[("tokenizer.json", "{}"), ("modules.json", "[]")]),
                Kind::TextEmbedder,
            ),
            (
                "classifier",
                head(r#", "id2label": {"0": "a", "1": "b"}"#),
                Kind::TextClassifier,
            ),
            ("default-two", head(""), Kind::TextClassifier),
            (
                "cross",
                head(r#", "id2label": {"0": "LABEL_0"}"#),
                Kind::CrossEncoder,
            ),
            (
                "cross-num",
                head(r#", "num_labels": 1"#),
                Kind::CrossEncoder,
            ),
            (
                "multi-one",
                head(r#", "num_labels": 1, "problem_type": "multi_label_classification""#),
                Kind::TextClassifier,
            ),
            (
                "mlp",
                files(&[
                    ("model.json", "{}"),
                    ("model.safetensors", ""),
                    ("preprocessor_config.json", "{}"),
                ]),
                Kind::MlpClassifier,
            ),
            (
                "resnet",
                files(&[
                    ("config.json", r#"{"architecture": "resnet18"}"#),
                    ("model.safetensors", ""),
                ]),
                Kind::ImageClassifier,
            ),
            (
                "vit",
                files(&[
                    ("config.json", r#"{"model_type": "vit"}"#),
                    ("model.safetensors", ""),
                ]),
                Kind::ImageClassifier,
            ),
            (
                "tabular",
                files(&[("tabular.json", "{}"), ("model.safetensors", "")]),
                Kind::Tabular,
            ),
            (
                "manifest",
                files(&[
                    ("model.json", "{}"),
                    ("model.safetensors", ""),
                    ("modelhost.json", r#"{"kind": "image-classifier"}"#),
                ]),
                Kind::ImageClassifier,
            ),
        ];
        for (tag, files, kind) in cases {
            let dir = dir_with(tag, &files);
            assert_eq!(Kind::of(&dir), Ok(kind), "{tag}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_directory_of_no_known_kind_and_an_unknown_manifest_kind_say_why() {
        let dir = dir_with("unknown", &files(&[("weights.bin", "")]));
        let e = Kind::of(&dir).unwrap_err();
        assert!(e.contains("not a model directory this server knows"), "{e}");
        let dir2 = dir_with(
            "bad-manifest",
            &files(&[("modelhost.json", r#"{"kind": "llm"}"#)]),
        );
        let e = Kind::of(&dir2).unwrap_err();
        assert!(
            e.contains("unknown kind `llm`; use one of [\"text-embedder\""),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&dir2);
    }
}
