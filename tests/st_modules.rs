//! sentence-transformers modules against sentence-transformers itself: the fixtures in
//! `tests/fixtures/st/` (small random-weight BERTs written by `scripts/make-st-fixtures.py`,
//! classic layouts by sentence-transformers 5.1.2, `v6-mean-cls` by 6.2.0) and the vectors
//! that version computed for 72 texts, per case (prompt, truncate_dim). Then the typed
//! errors of a broken pipeline.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use modelhost::Predictor;
use modelhost::cache::PredictionCache;
use modelhost::error::{InputError, LoadError, PredictError};
use modelhost::models::sentence::{
    EmbedRequest, Embedding, Layout, Pooling, Prompt, SentenceEmbedder,
};
use modelhost::models::text::EmbedderOptions;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/st")
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn texts() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("texts.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[derive(serde::Deserialize)]
struct References {
    sentence_transformers: String,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    prompt_name: Option<String>,
    prompt: Option<String>,
    truncate_dim: Option<usize>,
    embeddings: Vec<Vec<f32>>,
}

impl Case {
    fn prompt(&self) -> Prompt {
        match (&self.prompt, &self.prompt_name) {
            (Some(text), _) => Prompt::Text(text.clone()),
            (None, Some(name)) => Prompt::Named(name.clone()),
            (None, None) => Prompt::Default,
        }
    }
}

fn references(name: &str) -> References {
    let text = std::fs::read_to_string(fixture(name).join("references.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

const FIXTURES: [&str; 6] = [
    "cls-dense-normalize",
    "max",
    "lasttoken",
    "weightedmean",
    "mean-prompt",
    "v6-mean-cls",
];

fn load(dir: &Path, truncate_dim: Option<usize>) -> SentenceEmbedder {
    let options = EmbedderOptions {
        truncate_dim,
        ..EmbedderOptions::default()
    };
    SentenceEmbedder::load_with(dir, options).unwrap()
}

/// The embeddings of every text with `prompt`, in batches of 16 of mixed lengths.
fn embed_all(embedder: &SentenceEmbedder, texts: &[String], prompt: &Prompt) -> Vec<Embedding> {
    texts
        .chunks(16)
        .flat_map(|chunk| {
            let batch: Vec<_> = chunk
                .iter()
                .map(|t| embedder.tokenize_with(t, prompt).unwrap())
                .collect();
            embedder.embed_batch(&batch).unwrap()
        })
        .collect()
}

/// The smallest cosine, and the largest component difference, between ours and theirs.
fn compare(ours: &[Embedding], theirs: &[Vec<f32>]) -> (f32, f32) {
    assert_eq!(ours.len(), theirs.len());
    let mut min_cos = f32::INFINITY;
    let mut max_diff = 0f32;
    for (a, b) in ours.iter().zip(theirs) {
        assert_eq!(a.dim(), b.len());
        min_cos = min_cos.min(a.cosine(&Embedding(b.clone())));
        for (x, y) in a.iter().zip(b) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    (min_cos, max_diff)
}

#[test]
fn every_fixture_and_case_matches_sentence_transformers() {
    let texts = texts();
    assert_eq!(texts.len(), 72);
    for name in FIXTURES {
        let refs = references(name);
        for case in &refs.cases {
            let embedder = load(&fixture(name), case.truncate_dim);
            let ours = embed_all(&embedder, &texts, &case.prompt());
            let (min_cos, max_diff) = compare(&ours, &case.embeddings);
            println!(
                "{name} [{}] (sentence-transformers {}): min cosine {min_cos:.7}, max component difference {max_diff:.2e}",
                case.name, refs.sentence_transformers
            );
            assert!(
                min_cos >= 0.9999,
                "{name} [{}]: min cosine {min_cos}",
                case.name
            );
        }
    }
}

#[test]
fn the_fixtures_tell_texts_apart() {
    // Parity at 0.9999 means something only if different texts are far apart.
    let texts = texts();
    for name in FIXTURES {
        let refs = references(name);
        let e = &refs.cases[0].embeddings;
        let a = Embedding(e[0].clone());
        let farthest = e[1..]
            .iter()
            .map(|b| a.cosine(&Embedding(b.clone())))
            .fold(f32::INFINITY, f32::min);
        assert!(farthest < 0.99, "{name}: texts are too alike ({farthest})");
        assert_eq!(e.len(), texts.len());
    }
}

#[test]
fn both_layouts_are_read_with_their_modules() {
    let classic = load(&fixture("cls-dense-normalize"), None);
    assert_eq!(classic.layout(), Layout::Classic);
    assert_eq!(classic.pooling(), &[Pooling::Cls]);
    assert!(!classic.includes_prompt());
    assert!(classic.normalizes());
    assert_eq!(classic.dim(), 16);
    assert_eq!(classic.max_seq_length(), 64);
    assert_eq!(classic.prompt_names(), vec!["document", "query"]);
    assert_eq!(classic.prompt("query"), Some("query: "));
    assert_eq!(classic.default_prompt_name(), None);

    let v6 = load(&fixture("v6-mean-cls"), None);
    assert_eq!(v6.layout(), Layout::V6);
    // The 6.x list order, not the flags' fixed order.
    assert_eq!(v6.pooling(), &[Pooling::Mean, Pooling::Cls]);
    assert_eq!(v6.truncate_dim(), Some(16));
    assert_eq!(v6.dim(), 16);
    // max_seq_length from tokenizer_config.json's model_max_length.
    assert_eq!(v6.max_seq_length(), 64);

    let prompt = load(&fixture("mean-prompt"), None);
    assert_eq!(prompt.default_prompt_name(), Some("query"));
    for (name, mode) in [
        ("max", Pooling::Max),
        ("lasttoken", Pooling::LastToken),
        ("weightedmean", Pooling::WeightedMean),
    ] {
        assert_eq!(load(&fixture(name), None).pooling(), &[mode]);
    }
}

#[test]
fn a_left_out_prompt_starts_pooling_after_it() {
    let embedder = load(&fixture("mean-prompt"), None);
    // [CLS] query : → pooling starts at 3 (prompt tokenized alone, less its [SEP]).
    let t = embedder.tokenize("a cat").unwrap();
    let query_len = t.pooled_from();
    assert!(query_len >= 2, "{query_len}");
    assert_eq!(
        embedder
            .tokenize_with("a cat", &Prompt::Text(String::new()))
            .unwrap()
            .pooled_from(),
        0
    );
    // The whole prompt is in the tokens.
    let bare = embedder
        .tokenize_with("a cat", &Prompt::Text(String::new()))
        .unwrap();
    assert_eq!(t.len(), bare.len() + query_len - 1);
}

#[test]
fn requests_name_prompts_through_a_cached_predictor() {
    let refs = references("mean-prompt");
    let texts = texts();
    let cache = Arc::new(PredictionCache::builder().max_entries(1000).build());
    let embedder = load(&fixture("mean-prompt"), None).with_requests();
    let predictor = Predictor::builder(embedder)
        .cache(cache.clone())
        .build()
        .unwrap();
    for case in &refs.cases {
        for round in 0..2 {
            // The second round is answered from the cache: keys include the prompt.
            for (text, want) in texts.iter().zip(&case.embeddings).take(8) {
                let mut request = EmbedRequest::new(text.clone());
                request.prompt = case.prompt();
                let got = predictor.predict(request).unwrap();
                let cos = got.cosine(&Embedding(want.clone()));
                assert!(cos >= 0.9999, "[{}] round {round}: {cos}", case.name);
            }
        }
    }
    // A plain String still works, with the default prompt.
    let text = texts[0].clone();
    let plain = predictor.predict(text.clone().into()).unwrap();
    let default = &refs.cases[0];
    assert_eq!(default.name, "default prompt");
    assert!(plain.cosine(&Embedding(default.embeddings[0].clone())) >= 0.9999);

    // And so does predict(String) on the embedder load() returns.
    let strings = Predictor::builder(load(&fixture("mean-prompt"), None))
        .build()
        .unwrap();
    let same = strings.predict(text).unwrap();
    assert!(same.cosine(&plain) >= 0.99999);
}

#[test]
fn an_unknown_prompt_name_is_refused_listing_the_known_ones() {
    let predictor = Predictor::builder(load(&fixture("mean-prompt"), None).with_requests())
        .build()
        .unwrap();
    let err = predictor
        .predict(EmbedRequest::new("a cat").with_prompt_name("qurey"))
        .unwrap_err();
    let PredictError::Input(InputError::UnknownPrompt { name, known }) = &err else {
        panic!("expected UnknownPrompt, got {err:?}");
    };
    assert_eq!(name, "qurey");
    assert_eq!(known, &["document", "none", "passage", "query"]);
    assert!(
        err.to_string()
            .contains("its prompts are: document, none, passage, query")
    );

    // As a load option.
    let options = EmbedderOptions {
        prompt_name: Some("qurey".into()),
        ..EmbedderOptions::default()
    };
    let err = SentenceEmbedder::load_with(fixture("mean-prompt"), options).unwrap_err();
    assert!(
        matches!(&err, LoadError::InvalidOption { option: "prompt_name", allowed, .. } if allowed.contains("document, none, passage, query")),
        "{err}"
    );
    // A known one replaces the model's default.
    let options = EmbedderOptions {
        prompt_name: Some("passage".into()),
        ..EmbedderOptions::default()
    };
    let passage = SentenceEmbedder::load_with(fixture("mean-prompt"), options).unwrap();
    assert_eq!(passage.default_prompt_name(), Some("passage"));
}

#[test]
fn truncate_dim_past_the_dimension_is_refused() {
    for bad in [0, 17, 1000] {
        let options = EmbedderOptions {
            truncate_dim: Some(bad),
            ..EmbedderOptions::default()
        };
        let err = SentenceEmbedder::load_with(fixture("cls-dense-normalize"), options).unwrap_err();
        match &err {
            LoadError::InvalidOption {
                option: "truncate_dim",
                value,
                allowed,
            } => {
                assert_eq!(value, &bad.to_string());
                assert!(allowed.contains("1 to 16"), "{allowed}");
            }
            other => panic!("expected InvalidOption, got {other:?}"),
        }
    }
    // From the config file: named in the error.
    let dir = copy_fixture("v6-mean-cls", "st-truncate");
    edit_json(&dir.join("config_sentence_transformers.json"), |v| {
        v["truncate_dim"] = 25.into();
    });
    let err = SentenceEmbedder::load(&dir).unwrap_err();
    assert!(
        matches!(&err, LoadError::Config { path, message } if path.ends_with("config_sentence_transformers.json") && message.contains("1..=24")),
        "{err}"
    );
    // Truncation keeps the first dimensions of the normalised vector (not renormalised).
    let full = load(&fixture("cls-dense-normalize"), None);
    let cut = load(&fixture("cls-dense-normalize"), Some(8));
    let text = "A cat sits on the mat.";
    let a = full.embed_batch(&[full.tokenize(text).unwrap()]).unwrap();
    let b = cut.embed_batch(&[cut.tokenize(text).unwrap()]).unwrap();
    assert_eq!(&a[0][..8], &b[0][..]);
    assert!(b[0].iter().map(|x| x * x).sum::<f32>() < 0.999);
}

#[test]
fn a_dense_weight_of_the_wrong_shape_names_the_file_and_the_shape() {
    let dir = copy_fixture("cls-dense-normalize", "st-dense-shape");
    // The file holds [16, 32]; the config now says 12 outputs.
    edit_json(&dir.join("2_Dense/config.json"), |v| {
        v["out_features"] = 12.into();
    });
    let err = SentenceEmbedder::load(&dir).unwrap_err();
    match &err {
        LoadError::WrongShape {
            path,
            tensor,
            expected,
            got,
        } => {
            assert!(
                path.ends_with("2_Dense/model.safetensors"),
                "{}",
                path.display()
            );
            assert_eq!(tensor, "linear.weight");
            assert_eq!(expected, &[12, 32]);
            assert_eq!(got, &[16, 32]);
        }
        other => panic!("expected WrongShape, got {other:?}"),
    }
    assert!(err.to_string().contains("[12, 32]"));

    // The PyTorch checkpoint of the 6.x fixture: the same check.
    let dir = copy_fixture("v6-mean-cls", "st-dense-shape-bin");
    edit_json(&dir.join("2_Dense/config.json"), |v| {
        v["out_features"] = 20.into();
    });
    let err = SentenceEmbedder::load(&dir).unwrap_err();
    assert!(
        matches!(&err, LoadError::WrongShape { path, expected, got, .. } if path.ends_with("2_Dense/pytorch_model.bin") && expected == &[20, 64] && got == &[24, 64]),
        "{err:?}"
    );

    // in_features that do not follow from the pooling.
    let dir = copy_fixture("cls-dense-normalize", "st-dense-in");
    edit_json(&dir.join("2_Dense/config.json"), |v| {
        v["in_features"] = 64.into();
    });
    let err = SentenceEmbedder::load(&dir).unwrap_err();
    assert!(
        matches!(&err, LoadError::Config { message, .. } if message.contains("in_features must be 32")),
        "{err}"
    );

    // An activation that is not a torch.nn class.
    let dir = copy_fixture("cls-dense-normalize", "st-dense-act");
    edit_json(&dir.join("2_Dense/config.json"), |v| {
        v["activation_function"] = "mypackage.Swish".into();
    });
    let err = SentenceEmbedder::load(&dir).unwrap_err();
    assert!(
        matches!(&err, LoadError::Unsupported { what, .. } if what.contains("mypackage.Swish") && what.contains("Tanh")),
        "{err}"
    );
}

#[test]
fn module_paths_must_stay_inside_the_model_directory() {
    for (i, path) in ["../outside", "/etc", "1_Pooling/../../x"]
        .into_iter()
        .enumerate()
    {
        let dir = copy_fixture("max", &format!("st-escape-{i}"));
        edit_json(&dir.join("modules.json"), |v| {
            v[1]["path"] = path.into();
        });
        let err = SentenceEmbedder::load(&dir).unwrap_err();
        assert!(
            matches!(&err, LoadError::Config { path, message } if path.ends_with("modules.json") && message.contains("inside the model directory")),
            "{path}: {err}"
        );
    }
    #[cfg(unix)]
    {
        let outside = common::scratch_dir("st-escape-target");
        std::fs::copy(
            fixture("max").join("1_Pooling/config.json"),
            outside.join("config.json"),
        )
        .unwrap();
        let dir = copy_fixture("max", "st-escape-link");
        std::fs::remove_dir_all(dir.join("1_Pooling")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("1_Pooling")).unwrap();
        let err = SentenceEmbedder::load(&dir).unwrap_err();
        assert!(
            matches!(&err, LoadError::Config { message, .. } if message.contains("outside the model directory")),
            "{err}"
        );
    }
}

#[test]
fn unknown_modules_and_pooling_modes_are_refused_by_name() {
    let dir = copy_fixture("max", "st-lstm");
    edit_json(&dir.join("modules.json"), |v| {
        v[1]["type"] = "sentence_transformers.models.LSTM".into();
    });
    let err = SentenceEmbedder::load(&dir).unwrap_err();
    assert!(
        matches!(&err, LoadError::Unsupported { what, .. } if what.contains("sentence_transformers.models.LSTM")),
        "{err}"
    );

    let dir = copy_fixture("v6-mean-cls", "st-mode");
    edit_json(&dir.join("1_Pooling/config.json"), |v| {
        v["pooling_mode"] = "median".into();
    });
    let err = SentenceEmbedder::load(&dir).unwrap_err();
    assert!(
        matches!(&err, LoadError::Config { message, .. } if message.contains("\"median\"") && message.contains("weightedmean")),
        "{err}"
    );
    // Every mode widens every embedding: a list past one of each is refused.
    let dir = copy_fixture("v6-mean-cls", "st-modes");
    edit_json(&dir.join("1_Pooling/config.json"), |v| {
        v["pooling_mode"] = vec!["mean"; 7].into();
    });
    let err = SentenceEmbedder::load(&dir).unwrap_err();
    assert!(
        matches!(&err, LoadError::Config { message, .. } if message.contains("at most 6")),
        "{err}"
    );
}

#[test]
fn the_version_that_wrote_a_directory_decides_cls_after_a_prompt() {
    // The classic fixture under 6.x type names: CLS pooling with include_prompt=false now
    // reads the first token after the prompt, as 6.x does, and no longer matches what
    // 5.x (which wrote the references) computes. (sentence-transformers 6.2 itself,
    // loading the classic directory, gives min cosine 0.749 against 5.1.2's vectors for
    // this case, and 1.000000 for every other case of the classic fixtures.)
    let dir = copy_fixture("cls-dense-normalize", "st-as-v6");
    edit_json(&dir.join("modules.json"), |v| {
        for (i, t) in [
            "sentence_transformers.base.modules.transformer.Transformer",
            "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
            "sentence_transformers.base.modules.dense.Dense",
            "sentence_transformers.base.modules.normalize.Normalize",
        ]
        .into_iter()
        .enumerate()
        {
            v[i]["type"] = t.into();
        }
    });
    let as_v6 = SentenceEmbedder::load(&dir).unwrap();
    assert_eq!(as_v6.layout(), Layout::V6);
    let refs = references("cls-dense-normalize");
    let case = refs.cases.iter().find(|c| c.name == "query").unwrap();
    let texts = texts();
    let (min_cos, _) = compare(&embed_all(&as_v6, &texts, &case.prompt()), &case.embeddings);
    assert!(min_cos < 0.999, "{min_cos}");
    // Without a prompt both versions read [CLS].
    let case = &refs.cases[0];
    let (min_cos, _) = compare(&embed_all(&as_v6, &texts, &case.prompt()), &case.embeddings);
    assert!(min_cos >= 0.9999, "{min_cos}");
}

/// A copy of fixture `name` in a scratch directory.
fn copy_fixture(name: &str, scratch: &str) -> PathBuf {
    let dir = common::scratch_dir(scratch).join(name);
    copy_dir(&fixture(name), &dir);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, value.to_string()).unwrap();
}
