//! Model kinds, recognised from a version directory's own files (or its `modelhost.json`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The kinds of model this server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    TextEmbedder,
    TextClassifier,
    MlpClassifier,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [
        Kind::TextEmbedder,
        Kind::TextClassifier,
        Kind::MlpClassifier,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::TextEmbedder => "text-embedder",
            Kind::TextClassifier => "text-classifier",
            Kind::MlpClassifier => "mlp-classifier",
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
                    format!(
                        "{}: unknown kind `{}`; use \"text-embedder\", \"text-classifier\" or \"mlp-classifier\"",
                        manifest.display(),
                        m.kind
                    )
                });
        }
        let has = |f: &str| dir.join(f).is_file();
        if has("model.json") && has("model.safetensors") {
            Ok(Kind::MlpClassifier)
        } else if has("tokenizer.json") && sequence_classification(&dir.join("config.json")) {
            Ok(Kind::TextClassifier)
        } else if has("tokenizer.json") && (has("modules.json") || has("config.json")) {
            Ok(Kind::TextEmbedder)
        } else {
            Err(format!(
                "{}: not a model directory this server knows (a sentence-transformers directory, \
                 a transformers text classifier, model.json + model.safetensors, or a \
                 modelhost.json naming the kind)",
                dir.display()
            ))
        }
    }
}

/// Whether a Hugging Face `config.json` declares a sequence-classification head (as
/// transformers saves a fine-tuned classifier). Unreadable files say no: loading as an
/// embedder then reports what is wrong with them.
pub(crate) fn sequence_classification(config: &Path) -> bool {
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        architectures: Vec<String>,
    }
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| serde_json::from_str::<Config>(&text).ok())
        .is_some_and(|c| {
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
