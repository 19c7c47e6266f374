//! Reading a sentence-transformers directory's module pipeline: `modules.json`, each
//! module's configuration, `config_sentence_transformers.json`, in both layouts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::pooling::{ClsToken, Pooling};
use super::prompt::Prompts;
use crate::error::LoadError;
use crate::load::{read_json, require};

/// Which sentence-transformers wrote a directory, told by the module type names in its
/// `modules.json`. It decides the two behaviours that differ between versions, so that a
/// model is embedded as the version that saved it embeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// sentence-transformers 2.x–5.x, what Hub models carry: `sentence_transformers.models.*`
    /// module types, `pooling_mode_*` flags, `max_seq_length` in
    /// `sentence_bert_config.json`. A directory without `modules.json` is read so too.
    ///
    /// Text handling as 5.x: the text (after the prompt is prepended) and the prompt alone
    /// are stripped of leading and trailing whitespace before tokenizing (Python's
    /// `str.strip()`); CLS pooling reads the `[CLS]` token even when the prompt is left
    /// out of pooling.
    Classic,
    /// What sentence-transformers 6.x's `save()` writes: module types under
    /// `sentence_transformers.base.modules` and `sentence_transformers.sentence_transformer.modules`,
    /// `{"pooling_mode": "cls"}` (or a list, concatenated in its order), `max_seq_length`
    /// as `model_max_length` in `tokenizer_config.json`.
    ///
    /// Text handling as 6.x: texts are tokenized as given (no stripping); with the prompt
    /// left out of pooling, CLS pooling reads the first token after the prompt.
    V6,
}

impl Layout {
    /// Where CLS pooling reads when the prompt is left out.
    pub(super) fn cls_token(self) -> ClsToken {
        match self {
            Layout::Classic => ClsToken::First,
            Layout::V6 => ClsToken::FirstKept,
        }
    }

    /// The text as this version hands it to the tokenizer.
    pub(super) fn text(self, text: &str) -> &str {
        match self {
            Layout::Classic => python_strip(text),
            Layout::V6 => text,
        }
    }
}

/// `text` without leading and trailing whitespace as Python's `str.strip()` sees it
/// (Unicode whitespace and the separators U+001C..U+001F).
fn python_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// One module after the `Pooling` module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StepKind {
    Dense,
    Normalize,
}

/// `modules.json` read: where each module lives.
#[derive(Debug)]
pub(super) struct Modules {
    pub(super) layout: Layout,
    pub(super) transformer_dir: PathBuf,
    /// The `Pooling` module's directory (none: mean pooling, as for a plain model).
    pub(super) pooling_dir: Option<PathBuf>,
    /// The modules after pooling, in order.
    pub(super) steps: Vec<(StepKind, PathBuf)>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The module kinds read, by the last part of their type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Transformer,
    Pooling,
    Dense,
    Normalize,
}

/// The kind and layout a `modules.json` type names, if it is one of sentence-transformers'
/// modules this crate runs.
fn module_kind(type_name: &str) -> Option<(Kind, Layout)> {
    let (package, class) = type_name.rsplit_once('.')?;
    let kind = match class {
        "Transformer" => Kind::Transformer,
        "Pooling" => Kind::Pooling,
        "Dense" => Kind::Dense,
        "Normalize" => Kind::Normalize,
        _ => return None,
    };
    let layout = match package {
        "sentence_transformers.models" => Layout::Classic,
        p if p.starts_with("sentence_transformers.base.modules")
            || p.starts_with("sentence_transformers.sentence_transformer.modules") =>
        {
            Layout::V6
        }
        _ => return None,
    };
    Some((kind, layout))
}

/// Reads `modules.json` of `dir`: a `Transformer`, then a `Pooling`, then any sequence of
/// `Dense` and `Normalize` modules. A directory without it is a plain model (mean pooling,
/// no normalisation), as sentence-transformers reads one.
pub(super) fn read_modules(dir: &Path) -> Result<Modules, LoadError> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(Modules {
            layout: Layout::Classic,
            transformer_dir: dir.to_path_buf(),
            pooling_dir: None,
            steps: Vec::new(),
        });
    }
    let entries: Vec<ModuleEntry> = read_json(&modules_path)?;
    let supported = "supported pipelines are a Transformer, a Pooling module, then Dense and Normalize modules in any order";
    let mut layout = None;
    let mut transformer_dir = None;
    let mut pooling_dir = None;
    let mut steps = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some((kind, this_layout)) = module_kind(&entry.kind) else {
            return Err(LoadError::Unsupported {
                path: modules_path,
                what: format!("module `{}`; {supported}", entry.kind),
            });
        };
        if *layout.get_or_insert(this_layout) != this_layout {
            return Err(LoadError::config(
                &modules_path,
                format!(
                    "module `{}` mixes the type names of sentence-transformers 6.x with those of earlier versions; a directory is written by one version",
                    entry.kind
                ),
            ));
        }
        let module_dir = module_dir(dir, &modules_path, &entry.path)?;
        let out_of_place = || {
            LoadError::config(
                &modules_path,
                format!("module {i} (`{}`) is out of place; {supported}", entry.kind),
            )
        };
        match kind {
            Kind::Transformer if i == 0 => transformer_dir = Some(module_dir),
            Kind::Pooling if i == 1 => pooling_dir = Some(module_dir),
            Kind::Dense if pooling_dir.is_some() => steps.push((StepKind::Dense, module_dir)),
            Kind::Normalize if pooling_dir.is_some() => {
                steps.push((StepKind::Normalize, module_dir))
            }
            // Normalize straight after the Transformer: what a plain model with
            // normalisation was read as before Dense modules were (mean pooling).
            Kind::Normalize if i == 1 => steps.push((StepKind::Normalize, module_dir)),
            _ => return Err(out_of_place()),
        }
    }
    let transformer_dir = transformer_dir.ok_or_else(|| {
        LoadError::config(
            &modules_path,
            "no sentence_transformers Transformer module first",
        )
    })?;
    if pooling_dir.is_none() && steps.iter().any(|(k, _)| *k == StepKind::Dense) {
        return Err(LoadError::config(
            &modules_path,
            format!("a Dense module without a Pooling module; {supported}"),
        ));
    }
    Ok(Modules {
        layout: layout.unwrap_or(Layout::Classic),
        transformer_dir,
        pooling_dir,
        steps,
    })
}

/// The directory of a module whose `modules.json` entry has `path`: refused unless it is
/// a relative path inside the model directory `dir` — no `..`, no absolute path, and no
/// symbolic link leading out of it (checked on the resolved paths when it exists).
fn module_dir(dir: &Path, modules_path: &Path, path: &str) -> Result<PathBuf, LoadError> {
    use std::path::Component;
    let refuse = |why: &str| {
        LoadError::config(
            modules_path,
            format!(
                "module path `{path}` {why}; a module path must be a relative path inside the model directory"
            ),
        )
    };
    let relative = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !relative {
        return Err(refuse("is absolute or climbs out with `..`"));
    }
    let module_dir = dir.join(path);
    if let Ok(resolved) = module_dir.canonicalize() {
        let root = dir.canonicalize().map_err(|e| LoadError::io(dir, e))?;
        if !resolved.starts_with(&root) {
            return Err(refuse(&format!(
                "resolves to {}, outside the model directory {}",
                resolved.display(),
                root.display()
            )));
        }
    }
    Ok(module_dir)
}

/// The `Pooling` module's configuration, in either layout.
#[derive(Deserialize)]
struct PoolingConfig {
    /// 6.x: one mode name or a list of them.
    pooling_mode: Option<serde_json::Value>,
    /// 6.x's name of the input width; `word_embedding_dimension` before.
    embedding_dimension: Option<usize>,
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default = "yes")]
    include_prompt: bool,
}

fn yes() -> bool {
    true
}

/// The most pooling modes a `pooling_mode` list may hold: as many as there are.
const MAX_MODES: usize = 6;

/// The pooling modes (in concatenation order) and whether the prompt is pooled.
pub(super) struct PoolingModule {
    pub(super) modes: Vec<Pooling>,
    pub(super) include_prompt: bool,
}

/// Reads `config.json` of the Pooling module in `dir` (`None`: mean pooling). `hidden`
/// is the width of the token vectors.
pub(super) fn read_pooling(dir: Option<&Path>, hidden: usize) -> Result<PoolingModule, LoadError> {
    let Some(dir) = dir else {
        return Ok(PoolingModule {
            modes: vec![Pooling::Mean],
            include_prompt: true,
        });
    };
    let path = require(
        dir.join("config.json"),
        "the Pooling module's configuration",
    )?;
    let cfg: PoolingConfig = read_json(&path)?;
    if let Some(dim) = cfg.embedding_dimension.or(cfg.word_embedding_dimension)
        && dim != hidden
    {
        return Err(LoadError::config(
            &path,
            format!(
                "the pooling input dimension is {dim}, but the transformer's hidden size is {hidden}; they must be equal"
            ),
        ));
    }
    let modes = match &cfg.pooling_mode {
        // 6.x: the modes in the order given (sentence-transformers 6.x reads
        // `pooling_mode` and ignores the flags when both are present).
        Some(mode) => {
            let names: Vec<&serde_json::Value> = match mode {
                serde_json::Value::Array(list) => list.iter().collect(),
                one => vec![one],
            };
            // Each mode adds `hidden` values to every embedding: a list longer than the
            // modes there are would only repeat them (and size every request by the file).
            if names.len() > MAX_MODES {
                return Err(LoadError::config(
                    &path,
                    format!(
                        "pooling_mode lists {} modes; at most {MAX_MODES} (one of each) are allowed",
                        names.len()
                    ),
                ));
            }
            let mut modes = Vec::with_capacity(names.len());
            for name in names {
                let mode = name.as_str().and_then(Pooling::from_name).ok_or_else(|| {
                    LoadError::config(
                        &path,
                        format!(
                            "pooling_mode {name} is not a pooling mode; the modes are {}",
                            Pooling::NAMES
                        ),
                    )
                })?;
                modes.push(mode);
            }
            modes
        }
        // 2.x-5.x: the flags, concatenated in the order sentence-transformers' forward
        // computes them.
        None => [
            (cfg.pooling_mode_cls_token, Pooling::Cls),
            (cfg.pooling_mode_max_tokens, Pooling::Max),
            (cfg.pooling_mode_mean_tokens, Pooling::Mean),
            (cfg.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
            (cfg.pooling_mode_weightedmean_tokens, Pooling::WeightedMean),
            (cfg.pooling_mode_lasttoken, Pooling::LastToken),
        ]
        .into_iter()
        .filter_map(|(on, mode)| on.then_some(mode))
        .collect(),
    };
    if modes.is_empty() {
        return Err(LoadError::config(
            &path,
            "no pooling mode is enabled; set pooling_mode (6.x) or one of the pooling_mode_*_token(s) flags",
        ));
    }
    Ok(PoolingModule {
        modes,
        include_prompt: cfg.include_prompt,
    })
}

/// What the Transformer module's `sentence_bert_config.json` (and `tokenizer_config.json`)
/// say about the text side.
pub(super) struct TransformerConfig {
    /// `max_seq_length` (classic) or `model_max_length` (`tokenizer_config.json`, where 6.x
    /// keeps it and where earlier versions fell back to).
    pub(super) max_seq_length: Option<usize>,
    pub(super) do_lower_case: bool,
}

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
    transformer_task: Option<String>,
    module_output_name: Option<String>,
    modality_config: Option<BTreeMap<String, serde_json::Value>>,
}

pub(super) fn read_transformer(dir: &Path) -> Result<TransformerConfig, LoadError> {
    let path = dir.join("sentence_bert_config.json");
    let cfg: SentenceBertConfig = if path.is_file() {
        read_json(&path)?
    } else {
        SentenceBertConfig::default()
    };
    if let Some(task) = cfg.transformer_task.as_deref()
        && task != "feature-extraction"
    {
        return Err(LoadError::Unsupported {
            path,
            what: format!(
                "transformer_task `{task}`; a sentence embedder's Transformer module is `feature-extraction`"
            ),
        });
    }
    if let Some(name) = cfg.module_output_name.as_deref()
        && name != "token_embeddings"
    {
        return Err(LoadError::Unsupported {
            path,
            what: format!("module_output_name `{name}`; supported is `token_embeddings`"),
        });
    }
    if let Some(other) = cfg
        .modality_config
        .iter()
        .flat_map(|m| m.keys())
        .find(|k| *k != "text")
    {
        return Err(LoadError::Unsupported {
            path,
            what: format!("the `{other}` modality; supported is text"),
        });
    }
    let max_seq_length = match cfg.max_seq_length {
        Some(n) => Some(n),
        None => crate::models::text::tokenizer_max_length(dir)?,
    };
    Ok(TransformerConfig {
        max_seq_length,
        do_lower_case: cfg.do_lower_case,
    })
}

/// `config_sentence_transformers.json`: the prompts and `truncate_dim`.
#[derive(Deserialize, Default)]
struct StConfig {
    model_type: Option<String>,
    #[serde(default)]
    prompts: BTreeMap<String, Option<String>>,
    default_prompt_name: Option<String>,
    truncate_dim: Option<usize>,
}

/// What `config_sentence_transformers.json` says.
pub(super) struct ModelConfig {
    pub(super) prompts: Prompts,
    /// `truncate_dim`, and the file that gives it.
    pub(super) truncate_dim: Option<(usize, PathBuf)>,
}

/// Reads `config_sentence_transformers.json` of `dir` (absent: no prompts, no
/// truncation); `prompt_name` overrides `default_prompt_name`.
pub(super) fn read_model_config(
    dir: &Path,
    prompt_name: Option<&str>,
) -> Result<ModelConfig, LoadError> {
    let path = dir.join("config_sentence_transformers.json");
    let cfg: StConfig = if path.is_file() {
        read_json(&path)?
    } else {
        StConfig::default()
    };
    if let Some(kind) = cfg.model_type.as_deref()
        && kind != "SentenceTransformer"
    {
        return Err(LoadError::Unsupported {
            path,
            what: format!("model_type `{kind}`; a sentence embedder is a `SentenceTransformer`"),
        });
    }
    // sentence-transformers reads a null prompt as "".
    let by_name: BTreeMap<String, String> = cfg
        .prompts
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    let known = || by_name.keys().cloned().collect::<Vec<_>>().join(", ");
    let default_name = match (prompt_name, cfg.default_prompt_name) {
        (Some(name), _) => {
            if !by_name.contains_key(name) {
                return Err(LoadError::InvalidOption {
                    option: "prompt_name",
                    value: format!("{name:?}"),
                    allowed: if by_name.is_empty() {
                        "the model has no prompts".into()
                    } else {
                        format!("one of the model's prompts: {}", known())
                    },
                });
            }
            Some(name.to_string())
        }
        (None, Some(name)) => {
            if !by_name.contains_key(&name) {
                return Err(LoadError::config(
                    &path,
                    format!(
                        "default_prompt_name `{name}` is not one of the prompts ({})",
                        known()
                    ),
                ));
            }
            Some(name)
        }
        (None, None) => None,
    };
    let default = default_name
        .as_ref()
        .and_then(|n| by_name.get(n))
        .cloned()
        .unwrap_or_default();
    Ok(ModelConfig {
        prompts: Prompts {
            by_name,
            default,
            default_name,
        },
        truncate_dim: cfg.truncate_dim.map(|n| (n, path)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_types_of_both_layouts_are_recognised_and_others_are_not() {
        assert_eq!(
            module_kind("sentence_transformers.models.Pooling"),
            Some((Kind::Pooling, Layout::Classic))
        );
        assert_eq!(
            module_kind("sentence_transformers.sentence_transformer.modules.pooling.Pooling"),
            Some((Kind::Pooling, Layout::V6))
        );
        assert_eq!(
            module_kind("sentence_transformers.base.modules.dense.Dense"),
            Some((Kind::Dense, Layout::V6))
        );
        assert_eq!(module_kind("sentence_transformers.models.LSTM"), None);
        assert_eq!(module_kind("modeling_custom.Pooling"), None);
    }

    #[test]
    fn python_strip_removes_what_str_strip_removes() {
        assert_eq!(python_strip(" \t\n a b \u{3000}\u{a0}\u{1f}"), "a b");
        assert_eq!(Layout::V6.text("  a "), "  a ");
        assert_eq!(Layout::Classic.text("  a "), "a");
    }
}
