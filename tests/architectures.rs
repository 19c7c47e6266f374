//! The encoder families against transformers and sentence-transformers themselves: the
//! fixtures in `tests/fixtures/arch/` (small random-weight RoBERTa, XLM-RoBERTa, DistilBERT
//! and MPNet models with real tokenizers of each family, written by
//! `scripts/make-arch-fixtures.py`) and what sentence-transformers 6.2 / transformers 5.24
//! computed for 78 texts (embeddings), their logits (text classifier) and 49 pairs (cross-
//! encoder scores). Every engine runs every family: the padding-free ones, and the padded
//! one transformers' own computation is the model of.

mod common;

use std::path::PathBuf;

use modelhost::error::LoadError;
use modelhost::models::classifier::{CrossEncoder, TextClassifier, TextPair};
use modelhost::models::sentence::{Embedding, SentenceEmbedder};
use modelhost::models::text::{Engine, Precision, TextOptions};

const ARCHS: [&str; 4] = ["roberta", "xlm-roberta", "distilbert", "mpnet"];

/// The engines that run every family on the CPU.
const ENGINES: [Engine; 3] = [Engine::Packed, Engine::PackedPortable, Engine::Padded];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arch")
}

fn json<T: serde::de::DeserializeOwned>(path: PathBuf) -> T {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn texts() -> Vec<String> {
    json(fixtures().join("texts.json"))
}

fn pairs() -> Vec<TextPair> {
    let pairs: Vec<(String, String)> = json(fixtures().join("pairs.json"));
    pairs
        .into_iter()
        .map(|(q, p)| TextPair::new(q, p))
        .collect()
}

fn options(engine: Engine, precision: Precision) -> TextOptions {
    TextOptions {
        engine,
        precision,
        ..TextOptions::default()
    }
}

fn embed_all(embedder: &SentenceEmbedder, texts: &[String]) -> Vec<Embedding> {
    texts
        .chunks(16)
        .flat_map(|chunk| {
            let batch: Vec<_> = chunk
                .iter()
                .map(|t| embedder.tokenize(t).unwrap())
                .collect();
            embedder.embed_batch(&batch).unwrap()
        })
        .collect()
}

fn min_cosine(ours: &[Embedding], theirs: &[Vec<f32>]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| a.cosine(&Embedding(b.clone())))
        .fold(f32::INFINITY, f32::min)
}

fn max_difference(a: &[Embedding], b: &[Embedding]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y.iter()).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

#[derive(serde::Deserialize)]
struct EmbedRefs {
    embeddings: Vec<Vec<f32>>,
}

#[test]
fn every_family_embeds_as_sentence_transformers_on_every_engine() {
    let texts = texts();
    for arch in ARCHS {
        let dir = fixtures().join(arch).join("embed");
        let refs: EmbedRefs = json(dir.join("references.json"));
        let mut by_engine = Vec::new();
        for engine in ENGINES {
            let embedder =
                SentenceEmbedder::load_with(&dir, options(engine, Precision::F32)).unwrap();
            assert_eq!(embedder.engine(), engine);
            let ours = embed_all(&embedder, &texts);
            let cos = min_cosine(&ours, &refs.embeddings);
            println!("{arch} {engine:?}: min cosine {cos:.7}");
            assert!(cos >= 0.9999, "{arch} {engine:?}: min cosine {cos}");
            by_engine.push(ours);
        }
        let packed_vs_padded = max_difference(&by_engine[0], &by_engine[2]);
        println!("{arch}: packed vs padded max component difference {packed_vs_padded:.2e}");
        assert!(packed_vs_padded <= 1e-5, "{arch}: {packed_vs_padded}");
        let portable_vs_padded = max_difference(&by_engine[1], &by_engine[2]);
        assert!(portable_vs_padded <= 1e-5, "{arch}: {portable_vs_padded}");
    }
}

#[test]
fn every_family_runs_the_reduced_precisions_within_their_bounds() {
    let texts = texts();
    for arch in ARCHS {
        let dir = fixtures().join(arch).join("embed");
        let refs: EmbedRefs = json(dir.join("references.json"));
        for (precision, bound) in [(Precision::Bf16, 0.9995), (Precision::Int8, 0.995)] {
            let embedder =
                SentenceEmbedder::load_with(&dir, options(Engine::Packed, precision)).unwrap();
            assert_eq!(embedder.engine_info().precision, precision);
            let cos = min_cosine(&embed_all(&embedder, &texts), &refs.embeddings);
            println!("{arch} {precision}: min cosine {cos:.5}");
            assert!(cos >= bound, "{arch} {precision}: min cosine {cos}");
        }
    }
}

#[derive(serde::Deserialize)]
struct ClassifyRefs {
    logits: Vec<Vec<f32>>,
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[test]
fn every_family_classifies_as_transformers_on_every_engine() {
    let texts = texts();
    for arch in ARCHS {
        let dir = fixtures().join(arch).join("classify");
        let refs: ClassifyRefs = json(dir.join("references.json"));
        for engine in ENGINES {
            let classifier =
                TextClassifier::load_with(&dir, options(engine, Precision::F32)).unwrap();
            assert_eq!(classifier.labels(), ["negative", "neutral", "positive"]);
            let mut worst = 0f32;
            for (chunk, logits) in texts.chunks(16).zip(refs.logits.chunks(16)) {
                let batch: Vec<_> = chunk
                    .iter()
                    .map(|t| classifier.tokenize(t).unwrap())
                    .collect();
                for (ours, theirs) in classifier
                    .classify_batch(&batch)
                    .unwrap()
                    .iter()
                    .zip(logits)
                {
                    let expected = softmax(theirs);
                    for (p, q) in ours.scores.iter().zip(&expected) {
                        worst = worst.max((p - q).abs());
                    }
                }
            }
            println!("{arch} {engine:?}: max probability difference {worst:.2e}");
            assert!(worst <= 1e-4, "{arch} {engine:?}: {worst}");
        }
    }
}

#[derive(serde::Deserialize)]
struct RerankRefs {
    scores: Vec<f32>,
}

#[test]
fn every_family_scores_pairs_as_sentence_transformers_on_every_engine() {
    let pairs = pairs();
    for arch in ARCHS {
        let dir = fixtures().join(arch).join("rerank");
        let refs: RerankRefs = json(dir.join("references.json"));
        assert_eq!(refs.scores.len(), pairs.len());
        for engine in ENGINES {
            let ce = CrossEncoder::load_with(&dir, options(engine, Precision::F32)).unwrap();
            let mut worst = 0f32;
            for (chunk, theirs) in pairs.chunks(16).zip(refs.scores.chunks(16)) {
                let batch: Vec<_> = chunk.iter().map(|p| ce.tokenize(p).unwrap()).collect();
                for (ours, theirs) in ce.score_batch(&batch).unwrap().iter().zip(theirs) {
                    worst = worst.max((ours.score - theirs).abs());
                }
            }
            println!("{arch} {engine:?}: max score difference {worst:.2e}");
            assert!(worst <= 1e-4, "{arch} {engine:?}: {worst}");
        }
    }
}

/// A copy of the RoBERTa fixture whose `config.json` says `bert`: how a RoBERTa directory
/// loaded before the families were told apart (positions from 0, not from
/// `padding_idx + 1`).
#[test]
fn a_roberta_model_read_as_bert_gives_visibly_wrong_vectors() {
    let texts = texts();
    let dir = fixtures().join("roberta").join("embed");
    let refs: EmbedRefs = json(dir.join("references.json"));
    let right = SentenceEmbedder::load(&dir).unwrap();
    let right_cos = min_cosine(&embed_all(&right, &texts), &refs.embeddings);
    let copy = with_config(&dir, "roberta-as-bert", |cfg| {
        cfg["model_type"] = "bert".into()
    });
    let wrong = SentenceEmbedder::load(&copy).unwrap();
    let wrong_cos = min_cosine(&embed_all(&wrong, &texts), &refs.embeddings);
    println!("roberta read as roberta: min cosine {right_cos:.7}; as bert: {wrong_cos:.4}");
    assert!(right_cos >= 0.9999, "{right_cos}");
    assert!(wrong_cos < 0.999, "{wrong_cos}");
    let _ = std::fs::remove_dir_all(&copy);
}

#[test]
fn a_roberta_pair_is_encoded_with_double_separators_and_no_token_types() {
    let dir = fixtures().join("roberta").join("rerank");
    let ce = CrossEncoder::load(&dir).unwrap();
    let pair = ce
        .tokenize(&TextPair::new("the cat", "sat on the mat"))
        .unwrap();
    let ids = pair.ids();
    // <s> query </s></s> passage </s>: RoBERTa's <s> is 0 and </s> 2.
    assert_eq!(ids[0], 0);
    assert_eq!(*ids.last().unwrap(), 2);
    let separators = ids.windows(2).filter(|w| w == &[2, 2]).count();
    assert_eq!(separators, 1, "{ids:?}");
    assert!(
        pair.type_ids().iter().all(|&t| t == 0),
        "{:?}",
        pair.type_ids()
    );
}

#[test]
fn the_position_table_bounds_the_sequence_length_of_offset_families() {
    // RoBERTa's table has 66 rows and positions start at padding_idx + 1 = 2: 64 tokens.
    let dir = fixtures().join("roberta").join("embed");
    let options = TextOptions {
        max_seq_length: Some(1000),
        ..TextOptions::default()
    };
    let embedder = SentenceEmbedder::load_with(&dir, options).unwrap();
    assert_eq!(embedder.max_seq_length(), 64);
    let long = "word ".repeat(500);
    let tokens = embedder.tokenize(&long).unwrap();
    assert_eq!(tokens.len(), 64);
    assert_eq!(embed_all(&embedder, &[long]).len(), 1);
}

#[test]
fn the_stock_candle_engine_refuses_the_families_it_does_not_run() {
    for arch in ARCHS {
        let dir = fixtures().join(arch).join("embed");
        match SentenceEmbedder::load_with(&dir, options(Engine::Candle, Precision::F32)) {
            Err(LoadError::Unsupported { what, .. }) => {
                assert!(what.contains("Engine::Padded"), "{what}");
            }
            other => panic!("{arch}: expected Unsupported, got {:?}", other.err()),
        }
    }
}

#[test]
fn an_unknown_model_type_is_refused_naming_it_and_the_supported_ones() {
    let dir = fixtures().join("distilbert").join("embed");
    let copy = with_config(&dir, "unknown-model-type", |cfg| {
        cfg["model_type"] = "deberta-v2".into();
    });
    match TextClassifier::load(&copy) {
        Err(LoadError::Unsupported { what, .. }) => {
            assert!(what.contains("deberta-v2"), "{what}");
            for supported in ["bert", "roberta", "xlm-roberta", "distilbert", "mpnet"] {
                assert!(what.contains(supported), "{what}");
            }
        }
        other => panic!("expected Unsupported, got {:?}", other.err()),
    }
    let _ = std::fs::remove_dir_all(&copy);
}

/// `dir`'s files in a scratch directory with `edit` applied to `config.json`.
fn with_config(
    dir: &std::path::Path,
    name: &str,
    edit: impl Fn(&mut serde_json::Value),
) -> PathBuf {
    let copy = common::scratch_dir(name);
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            let to = copy.join(entry.file_name());
            std::fs::create_dir_all(&to).unwrap();
            for inner in std::fs::read_dir(entry.path()).unwrap() {
                let inner = inner.unwrap();
                std::fs::copy(inner.path(), to.join(inner.file_name())).unwrap();
            }
        } else {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    let config = copy.join("config.json");
    let mut cfg: serde_json::Value = json(config.clone());
    edit(&mut cfg);
    std::fs::write(&config, cfg.to_string()).unwrap();
    copy
}

#[test]
fn hostile_config_numbers_get_typed_errors_before_anything_is_sized_by_them() {
    let huge = serde_json::Value::from(1u64 << 40);
    let cases: [(&str, &str, &str, serde_json::Value); 6] = [
        ("mpnet", "classify", "max_position_embeddings", huge.clone()),
        (
            "mpnet",
            "embed",
            "relative_attention_num_buckets",
            huge.clone(),
        ),
        ("mpnet", "embed", "relative_attention_num_buckets", 8.into()),
        ("distilbert", "embed", "n_layers", (1u64 << 60).into()),
        ("roberta", "rerank", "hidden_size", huge.clone()),
        ("xlm-roberta", "embed", "intermediate_size", huge),
    ];
    for (arch, kind, key, value) in cases {
        let dir = with_config(&fixtures().join(arch).join(kind), "hostile-config", |cfg| {
            cfg[key] = value.clone();
        });
        for engine in ENGINES {
            let result = match kind {
                "embed" => SentenceEmbedder::load_with(&dir, options(engine, Precision::F32)).err(),
                "classify" => {
                    TextClassifier::load_with(&dir, options(engine, Precision::F32)).err()
                }
                _ => CrossEncoder::load_with(&dir, options(engine, Precision::F32)).err(),
            };
            match result {
                Some(LoadError::Weights { message, .. }) => {
                    println!("{arch} {key} = {value} ({engine:?}): {message}");
                }
                other => {
                    panic!("{arch} {key} = {value} ({engine:?}): expected Weights, got {other:?}")
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Config numbers that passed the checks but poisoned the arithmetic: a `pad_token_id` of
/// u64::MAX wrapped `padding_idx + 1` to 0 (RoBERTa loaded with positions from 0), and a
/// negative or f32-overflowing `layer_norm_eps` made every output NaN or 0.
#[test]
fn config_numbers_that_wrapped_or_poisoned_the_arithmetic_are_refused() {
    let cases: [(&str, &str, &str, serde_json::Value); 4] = [
        ("roberta", "classify", "pad_token_id", u64::MAX.into()),
        ("xlm-roberta", "rerank", "pad_token_id", u64::MAX.into()),
        ("roberta", "embed", "layer_norm_eps", (-1.0).into()),
        ("mpnet", "classify", "layer_norm_eps", 1e300.into()),
    ];
    for (arch, kind, key, value) in cases {
        let dir = with_config(
            &fixtures().join(arch).join(kind),
            "poisoned-config",
            |cfg| {
                cfg[key] = value.clone();
            },
        );
        for engine in ENGINES {
            let result = match kind {
                "embed" => SentenceEmbedder::load_with(&dir, options(engine, Precision::F32)).err(),
                "classify" => {
                    TextClassifier::load_with(&dir, options(engine, Precision::F32)).err()
                }
                _ => CrossEncoder::load_with(&dir, options(engine, Precision::F32)).err(),
            };
            match result {
                Some(LoadError::Weights { message, .. } | LoadError::Config { message, .. }) => {
                    println!("{arch} {key} = {value} ({engine:?}): {message}");
                }
                other => {
                    panic!("{arch} {key} = {value} ({engine:?}): expected a refusal, got {other:?}")
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A pair of two 1 MiB texts (the input limit, each side) on every family's cross-encoder:
/// truncated to the model's length and scored. The pieces truncation cut off were merged
/// piece by piece (millions of encodings) and aborted the process on memory.
#[test]
fn a_pair_of_two_texts_at_the_byte_limit_is_truncated_and_scored() {
    let text = "word ".repeat((1 << 20) / 5);
    let pair = TextPair::new(text.clone(), text);
    for arch in ARCHS {
        let model = CrossEncoder::load(fixtures().join(arch).join("rerank")).unwrap();
        let tokens = model.tokens(&pair).unwrap();
        assert!(tokens.truncated, "{arch}");
        assert_eq!(tokens.tokens.len(), model.max_seq_length(), "{arch}");
        let batch = [model.tokenize(&pair).unwrap()];
        let score = model.score_batch(&batch).unwrap()[0];
        assert!(score.logit.is_finite(), "{arch}: {score:?}");
    }
}

#[derive(serde::Deserialize)]
struct RealRefs {
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

/// The real all-mpnet-base-v2 (438 MB: `scripts/fetch-models.sh --mpnet`), 40 texts of the
/// reference set (the 8 longest, cut at its 384 tokens), against what sentence-transformers
/// computed with it; every engine and precision. `.ci/run` runs it.
#[test]
#[ignore = "needs models/all-mpnet-base-v2: scripts/fetch-models.sh --mpnet"]
fn the_real_all_mpnet_base_v2_matches_sentence_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-mpnet-base-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "run scripts/fetch-models.sh --mpnet first"
    );
    let refs: RealRefs = json(fixtures().join("all-mpnet-base-v2.json"));
    let runs = [
        (Engine::Packed, Precision::F32, 0.9999),
        (Engine::Padded, Precision::F32, 0.9999),
        (Engine::Packed, Precision::Bf16, 0.999),
        (Engine::Packed, Precision::Int8, 0.99),
    ];
    let mut f32_runs = Vec::new();
    for (engine, precision, bound) in runs {
        let embedder = SentenceEmbedder::load_with(&dir, options(engine, precision)).unwrap();
        assert_eq!(embedder.max_seq_length(), 384);
        let ours = embed_all(&embedder, &refs.texts);
        let cos = min_cosine(&ours, &refs.embeddings);
        println!("all-mpnet-base-v2 {engine:?} {precision}: min cosine {cos:.6}");
        assert!(cos >= bound, "{engine:?} {precision}: min cosine {cos}");
        if precision == Precision::F32 {
            f32_runs.push(ours);
        }
    }
    let worst = max_difference(&f32_runs[0], &f32_runs[1]);
    println!("all-mpnet-base-v2: packed vs padded max component difference {worst:.2e}");
    assert!(worst <= 1e-5, "{worst}");
}
