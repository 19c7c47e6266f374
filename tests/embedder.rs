//! The sentence embedder on the real reference model (sentence-transformers/all-MiniLM-L6-v2,
//! fetched by `scripts/fetch-models.sh`), against embeddings sentence-transformers produced.

mod common;

use proptest::prelude::*;

use modelhost::{
    Predictor, error::InputError, error::LoadError, error::PredictError,
    models::sentence::Embedding, models::sentence::SentenceEmbedder, models::text::EmbedderOptions,
    models::text::Engine, models::text::Precision,
};

fn load(engine: Engine) -> SentenceEmbedder {
    let options = EmbedderOptions {
        engine,
        ..EmbedderOptions::default()
    };
    SentenceEmbedder::load_with(common::minilm_dir(), options).unwrap()
}

#[test]
fn packed_engine_matches_sentence_transformers_on_all_200_references() {
    let embedder = SentenceEmbedder::load(common::minilm_dir()).unwrap();
    assert_eq!(
        embedder.engine(),
        Engine::Packed,
        "the packed engine is the CPU default"
    );
    parity(embedder);
}

#[test]
fn candle_engine_matches_sentence_transformers_on_all_200_references() {
    parity(load(Engine::Candle));
}

#[test]
fn the_padded_encoder_matches_sentence_transformers_and_the_packed_engine() {
    let padded = load(Engine::Padded);
    assert_eq!(padded.engine(), Engine::Padded);
    let worst = common::max_component_difference(&load(Engine::Packed), &padded);
    println!("max |packed - modelhost padded| over 200 texts: {worst:e}");
    assert!(worst <= 1e-5, "max component difference {worst}");
    parity(padded);
}

#[test]
fn packed_and_padded_engines_agree_within_1e_5_per_component() {
    let (packed, padded) = (load(Engine::Packed), load(Engine::Candle));
    // Batches of mixed lengths, so the padded engine really pads.
    let worst = common::max_component_difference(&packed, &padded);
    println!("max |packed - padded| over 200 texts: {worst:e}");
    assert!(worst <= 1e-5, "max component difference {worst}");
}

#[test]
fn the_portable_packed_engine_matches_the_cpu_kernels_within_1e_5() {
    let (fast, portable) = (load(Engine::Packed), load(Engine::PackedPortable));
    assert_eq!(portable.engine(), Engine::PackedPortable);
    let worst = common::max_component_difference(&fast, &portable);
    println!("max |cpu kernels - portable| over 200 texts: {worst:e}");
    assert!(worst <= 1e-5, "max component difference {worst}");
}

/// The min and mean cosine of `embedder`'s embeddings of the 200 references against
/// sentence-transformers'.
fn cosines(embedder: &SentenceEmbedder) -> (f32, f32) {
    let refs = common::references();
    let batch: Vec<_> = refs
        .iter()
        .map(|r| embedder.tokenize(&r.text).unwrap())
        .collect();
    let ours = embedder.embed_batch(&batch).unwrap();
    let cos: Vec<f32> = ours
        .iter()
        .zip(&refs)
        .map(|(e, r)| e.cosine(&Embedding(r.embedding.clone())))
        .collect();
    let min = cos.iter().copied().fold(f32::INFINITY, f32::min);
    (min, cos.iter().sum::<f32>() / cos.len() as f32)
}

#[test]
fn each_precision_of_the_packed_engine_stays_within_its_bound_of_the_reference() {
    // Floors from the issue: bf16 min 0.999 / mean 0.9999; int8 min 0.99 / mean 0.995
    // (ONNX Runtime's per-channel int8 export reaches 0.9825 / 0.9918).
    for (precision, min_floor, mean_floor) in [
        (Precision::F32, 0.9999, 0.99999),
        (Precision::Bf16, 0.999, 0.9999),
        (Precision::Int8, 0.99, 0.995),
    ] {
        let options = EmbedderOptions {
            precision,
            ..EmbedderOptions::default()
        };
        let embedder = SentenceEmbedder::load_with(common::minilm_dir(), options).unwrap();
        let info = embedder.engine_info();
        assert_eq!((info.engine, info.precision), (Engine::Packed, precision));
        let (min, mean) = cosines(&embedder);
        println!(
            "{precision} at {}: min cosine {min:.5}, mean {mean:.6}, dense weights {} bytes",
            info.isa.unwrap(),
            info.dense_weight_bytes.unwrap()
        );
        assert!(
            min >= min_floor,
            "{precision}: min cosine {min} < {min_floor}"
        );
        assert!(
            mean >= mean_floor,
            "{precision}: mean cosine {mean} < {mean_floor}"
        );
    }
}

#[test]
fn half_precision_packed_embeddings_stay_close_to_the_reference() {
    // Measured here over all 200: bf16 0.9932, f16 0.99998 (bf16 keeps 8 bits of mantissa).
    for (dtype, floor) in [
        (modelhost::DType::BF16, 0.99),
        (modelhost::DType::F16, 0.9999),
    ] {
        let options = EmbedderOptions {
            dtype,
            ..EmbedderOptions::default()
        };
        let embedder = SentenceEmbedder::load_with(common::minilm_dir(), options).unwrap();
        assert_eq!(embedder.engine(), Engine::PackedPortable);
        let refs = common::references();
        let batch: Vec<_> = refs
            .iter()
            .map(|r| embedder.tokenize(&r.text).unwrap())
            .collect();
        let ours = embedder.embed_batch(&batch).unwrap();
        let worst = ours
            .iter()
            .zip(&refs)
            .map(|(e, r)| e.cosine(&Embedding(r.embedding.clone())))
            .fold(f32::INFINITY, f32::min);
        println!("{dtype:?}: min cosine over 200 references {worst}");
        assert!(worst >= floor, "{dtype:?}: min cosine {worst} < {floor}");
    }
}

fn parity(embedder: SentenceEmbedder) {
    assert_eq!(embedder.dim(), 384);
    assert_eq!(embedder.max_seq_length(), 256);
    assert!(embedder.normalizes());
    let predictor = Predictor::builder(embedder)
        .max_batch_size(32)
        .build()
        .unwrap();

    let refs = common::references();
    assert_eq!(refs.len(), 200);
    let answers = predictor.predict_many(refs.iter().map(|r| r.text.clone()));
    let mut worst = (f32::INFINITY, String::new());
    for (r, answer) in refs.iter().zip(answers) {
        let ours = answer.unwrap();
        assert_eq!(ours.dim(), 384);
        let cos = ours.cosine(&Embedding(r.embedding.clone()));
        if cos < worst.0 {
            worst = (cos, r.text.chars().take(60).collect());
        }
    }
    println!(
        "min cosine over 200 references: {:.7} ({:?})",
        worst.0, worst.1
    );
    assert!(worst.0 >= 0.9999, "min cosine {} on {:?}", worst.0, worst.1);
}

#[test]
fn long_texts_are_truncated_to_max_seq_length_like_the_reference() {
    let embedder = SentenceEmbedder::load(common::minilm_dir()).unwrap();
    let refs = common::references();
    let long: Vec<_> = refs
        .iter()
        .filter(|r| embedder.tokenize(&r.text).unwrap().len() == 256)
        .collect();
    assert!(
        long.len() >= 3,
        "the references should hold texts that need truncation"
    );
    let predictor = Predictor::builder(embedder).build().unwrap();
    for r in long {
        let ours = predictor.predict(r.text.clone()).unwrap();
        assert!(ours.cosine(&Embedding(r.embedding.clone())) >= 0.9999);
    }
}

#[test]
fn batched_and_single_embeddings_agree() {
    let predictor = Predictor::builder(SentenceEmbedder::load(common::minilm_dir()).unwrap())
        .max_batch_size(16)
        .build()
        .unwrap();
    let texts: Vec<String> = common::references()
        .into_iter()
        .take(16)
        .map(|r| r.text)
        .collect();
    let batched = predictor.predict_many(texts.clone());
    for (text, batched) in texts.into_iter().zip(batched) {
        let single = predictor.predict(text).unwrap();
        let batched = batched.unwrap();
        let max_diff = single
            .iter()
            .zip(batched.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff < 1e-5,
            "padding changed an embedding by {max_diff}"
        );
    }
}

#[test]
fn empty_text_is_embedded_like_any_text() {
    let predictor = Predictor::builder(SentenceEmbedder::load(common::minilm_dir()).unwrap())
        .build()
        .unwrap();
    let e = predictor.predict(String::new()).unwrap();
    assert_eq!(e.dim(), 384);
    let norm: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
}

#[test]
fn a_text_over_the_limit_without_truncation_gets_too_long_naming_the_limit() {
    let options = EmbedderOptions {
        truncate: false,
        ..EmbedderOptions::default()
    };
    let embedder = SentenceEmbedder::load_with(common::minilm_dir(), options).unwrap();
    let predictor = Predictor::builder(embedder).build().unwrap();
    let text = "word ".repeat(300);
    let err = predictor.predict(text).unwrap_err();
    assert_eq!(
        err,
        PredictError::Input(InputError::TooLong {
            tokens: 302,
            max: 256
        })
    );
    assert_eq!(
        err.to_string(),
        "input is 302 tokens long; the model accepts at most 256 tokens (shorten it or enable truncation)"
    );
    // A text within the limit still works.
    assert_eq!(predictor.predict("short".into()).unwrap().dim(), 384);
}

/// Texts of the references joined by spaces until they pass `bytes`.
fn long_text(bytes: usize) -> String {
    let refs = common::references();
    let mut text = String::new();
    for r in refs.iter().cycle() {
        if text.len() >= bytes {
            break;
        }
        text.push_str(&r.text);
        text.push(' ');
    }
    text
}

#[test]
fn a_multi_megabyte_text_embeds_like_its_first_kilobytes_and_without_truncation_is_refused() {
    let embedder = SentenceEmbedder::load(common::minilm_dir()).unwrap();
    let text = long_text(4 << 20);
    // Its first 8 KB, cut at a space: far more than 256 tokens.
    let head = &text[..text[..8192].rfind(' ').unwrap()];
    // Accepted although it is 4 times the 1 MiB input limit: only a bounded prefix is
    // handed to the tokenizer (the limit applies to that prefix).
    let tokens = embedder.tokenize(&text).unwrap();
    assert_eq!(tokens, embedder.tokenize(head).unwrap());
    assert_eq!(tokens.len(), 256);
    let predictor = Predictor::builder(embedder).build().unwrap();
    let (long, short) = (
        predictor.predict(text.clone()),
        predictor.predict(head.into()),
    );
    assert_eq!(long.unwrap().as_slice(), short.unwrap().as_slice());

    let options = EmbedderOptions {
        truncate: false,
        ..EmbedderOptions::default()
    };
    let strict = SentenceEmbedder::load_with(common::minilm_dir(), options).unwrap();
    let e = strict.tokenize(&text).unwrap_err();
    assert_eq!(
        e,
        InputError::TooManyBytes {
            field: "text".into(),
            bytes: text.len(),
            max: 1 << 20
        }
    );
    assert!(
        e.to_string().contains("at most 1048576 bytes are accepted"),
        "{e}"
    );
}

#[test]
fn a_text_over_the_byte_limit_is_refused_before_tokenizing() {
    // With truncation on, a text with no whitespace to cut a prefix at.
    let embedder = SentenceEmbedder::load(common::minilm_dir()).unwrap();
    let word = "x".repeat(2 << 20);
    let e = embedder.tokenize(&word).unwrap_err();
    assert!(
        matches!(e, InputError::TooManyBytes { bytes, max, .. } if bytes == 2 << 20 && max == 1 << 20),
        "{e:?}"
    );
    // The limit is an option, and applies to every text without truncation.
    let options = EmbedderOptions {
        truncate: false,
        max_input_bytes: 100,
        ..EmbedderOptions::default()
    };
    let strict = SentenceEmbedder::load_with(common::minilm_dir(), options).unwrap();
    let e = strict.tokenize(&"a ".repeat(51)).unwrap_err();
    assert!(
        matches!(
            e,
            InputError::TooManyBytes {
                bytes: 102,
                max: 100,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(strict.tokenize(&"a ".repeat(50)).unwrap().len(), 52);
}

/// MiniLM's tokenizer as sentence-transformers runs it: the whole text, truncated to
/// `max_len` tokens.
fn whole_text_tokenizer(max_len: usize) -> tokenizers::Tokenizer {
    let mut t =
        tokenizers::Tokenizer::from_file(common::minilm_dir().join("tokenizer.json")).unwrap();
    t.with_padding(None);
    t.with_truncation(Some(tokenizers::TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .unwrap();
    t
}

#[test]
fn a_text_in_chinese_over_the_byte_limit_is_cut_between_ideographs_exactly() {
    // 2 MiB of Chinese and Japanese without a single space: before, no whitespace to cut
    // at meant `TooManyBytes`. BERT splits around every ideograph and punctuation mark, so
    // a prefix cut there tokenizes as the start of the whole text.
    let sentence = "東京の天気は晴れ、明日は雨が降るでしょう。北京大学的学生正在学习机器学习。";
    let text = sentence.repeat((2 << 20) / sentence.len() + 1);
    assert!(text.len() > 2 << 20 && !text.contains(char::is_whitespace));
    let embedder = SentenceEmbedder::load(common::minilm_dir()).unwrap();
    let tokens = embedder.tokenize(&text).unwrap();
    let whole = whole_text_tokenizer(256)
        .encode(text.as_str(), true)
        .unwrap();
    assert_eq!(tokens.ids(), whole.get_ids());
    assert_eq!(tokens.len(), 256);
    // A Latin word of 2 MiB still has nowhere to cut: refused, saying the limit.
    let e = embedder.tokenize(&"x".repeat(2 << 20)).unwrap_err();
    assert!(matches!(e, InputError::TooManyBytes { .. }), "{e:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the mix of scripts, punctuation, special tokens, long words and control
    /// characters, an accepted text tokenizes exactly as the whole text truncated, at both
    /// byte limits (the prefix found going forward, and the last cut before the limit) and
    /// with the cut near the truncation point (a 4-token limit and words of one token per
    /// 120 bytes).
    #[test]
    fn a_bounded_prefix_tokenizes_as_the_whole_text(
        pieces in proptest::collection::vec(0usize..PIECES.len(), 1..3000),
        small_limit in any::<bool>(),
        short in any::<bool>(),
    ) {
        let text: String = pieces.iter().map(|&i| PIECES[i]).collect();
        let max_input_bytes = if small_limit { 300 } else { 6000 };
        let max_len = if short { 4 } else { 16 };
        let embedder = embedder_with(max_input_bytes, max_len);
        let whole = whole_text_tokenizer(max_len).encode(text.as_str(), true).unwrap();
        match embedder.tokenize(&text) {
            Ok(tokens) => prop_assert_eq!(tokens.ids(), whole.get_ids()),
            Err(InputError::TooManyBytes { bytes, max, .. }) => {
                prop_assert_eq!((bytes, max), (text.len(), max_input_bytes));
            }
            Err(e) => prop_assert!(false, "{e:?}"),
        }
    }
}

/// What the property test's texts are made of.
const PIECES: &[&str] = &[
    "東京",
    "は",
    "晴れ",
    "。",
    "、",
    "北京",
    "[MASK]",
    "[mask]",
    "[CLS",
    "]",
    "word",
    "ünïcode",
    " ",
    "\u{3000}",
    "!",
    "(",
    "x\x0by",
    "İ",
    "e\u{301}",
    "\t",
    "한국어",
    "--",
    "😀",
    "\u{ff01}",
    "[MASK][MASK][MASK]",
    LONG_WORD,
    LONG_WORD,
    LONG_WORD,
];

/// Past 100 characters WordPiece reads a word as one `[UNK]`.
const LONG_WORD: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// MiniLM with a byte limit and a maximum sequence length, loaded once per pair.
fn embedder_with(max_input_bytes: usize, max_len: usize) -> std::sync::Arc<SentenceEmbedder> {
    type Loaded = std::collections::HashMap<(usize, usize), std::sync::Arc<SentenceEmbedder>>;
    static LOADED: std::sync::Mutex<Option<Loaded>> = std::sync::Mutex::new(None);
    let mut loaded = LOADED.lock().unwrap();
    let loaded = loaded.get_or_insert_with(Loaded::new);
    let embedder = loaded.entry((max_input_bytes, max_len)).or_insert_with(|| {
        let options = EmbedderOptions {
            max_input_bytes,
            max_seq_length: Some(max_len),
            ..EmbedderOptions::default()
        };
        std::sync::Arc::new(SentenceEmbedder::load_with(common::minilm_dir(), options).unwrap())
    });
    embedder.clone()
}

#[test]
fn an_architecture_other_than_bert_is_refused_by_name() {
    // DeBERTa is not run (RoBERTa, which this test named before, now is).
    let dir = std::env::temp_dir().join(format!("modelhost-roberta-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(common::minilm_dir()).unwrap() {
        let path = entry.unwrap().path();
        let link = dir.join(path.file_name().unwrap());
        // Modules would resolve outside the directory through a link: left out.
        let name = path.file_name().unwrap();
        if path.is_file() && name != "config.json" && name != "modules.json" && !link.exists() {
            std::os::unix::fs::symlink(&path, link).unwrap();
        }
    }
    let config = std::fs::read_to_string(common::minilm_dir().join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["model_type"] = "deberta-v2".into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let e = SentenceEmbedder::load(&dir).err().unwrap();
    assert!(
        matches!(&e, LoadError::Unsupported { path, what }
            if path == &dir.join("config.json") && what == "model_type `deberta-v2`; supported are bert, roberta, xlm-roberta, distilbert, mpnet"),
        "{e:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn module_paths_outside_the_model_directory_are_refused_naming_the_path() {
    let dir = std::env::temp_dir().join(format!("modelhost-modules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A symlink to a real model elsewhere: it would load, from outside the directory.
    std::os::unix::fs::symlink(common::minilm_dir(), dir.join("link")).unwrap();
    let minilm = common::minilm_dir();
    for path in [
        "../elsewhere",
        minilm.to_str().unwrap(),
        "link",
        "./a/../../x",
    ] {
        let modules = serde_json::json!([
            {"idx": 0, "name": "0", "path": path, "type": "sentence_transformers.models.Transformer"}
        ]);
        std::fs::write(dir.join("modules.json"), modules.to_string()).unwrap();
        match SentenceEmbedder::load(&dir).unwrap_err() {
            LoadError::Config {
                path: file,
                message,
            } => {
                assert_eq!(file, dir.join("modules.json"));
                assert!(
                    message.contains(&format!("module path `{path}`")),
                    "{message}"
                );
                assert!(message.contains("inside the model directory"), "{message}");
            }
            other => panic!("expected a Config error for {path}, got {other:?}"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_directory_without_weights_is_a_typed_load_error() {
    let dir = std::env::temp_dir().join(format!("modelhost-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = SentenceEmbedder::load(&dir).unwrap_err();
    match err {
        LoadError::MissingFile { path, what } => {
            assert_eq!(path, dir.join("config.json"));
            assert_eq!(what, "the model configuration");
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn embed_cli_reproduces_the_reference_vectors_in_input_order() {
    let refs = common::references();
    let dir = std::env::temp_dir().join(format!("modelhost-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("texts.txt"), dir.join("out.jsonl"));
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    std::fs::write(&input, texts.join("\n") + "\n").unwrap();

    let status = std::process::Command::new(common::example_binary("embed"))
        .arg("--model")
        .arg(common::minilm_dir())
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .status()
        .unwrap();
    assert!(status.success());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), refs.len());
    for (r, line) in refs.iter().zip(&lines) {
        let ours: Vec<f32> = serde_json::from_value(line["embedding"].clone()).unwrap();
        let cos = Embedding(ours).cosine(&Embedding(r.embedding.clone()));
        assert!(cos >= 0.9999, "cosine {cos} for {:?}", r.text);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn embed_cli_reports_a_failing_line_and_goes_on() {
    let long = "word ".repeat(300);
    let input = format!("first\n{long}\n\nlast\n");
    let model = common::minilm_dir();
    let out = common::run_embed(
        &["--model".as_ref(), model.as_ref(), "--no-truncate".as_ref()],
        &input,
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["embedding"].as_array().unwrap().len(), 384);
    assert_eq!(
        lines[1]["error"],
        "input is 302 tokens long; the model accepts at most 256 tokens (shorten it or enable truncation)"
    );
    assert_eq!(
        lines[2]["embedding"].as_array().unwrap().len(),
        384,
        "an empty line is embedded"
    );
    assert_eq!(lines[3]["embedding"].as_array().unwrap().len(), 384);
}

#[test]
fn embed_cli_answers_a_line_that_is_not_utf8_with_an_error_row() {
    let model = common::minilm_dir();
    let out = common::run_embed(
        &["--model".as_ref(), model.as_ref()],
        b"first\nbad \xff\xfe bytes\r\nlast".as_slice(),
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0]["embedding"].as_array().unwrap().len(), 384);
    assert_eq!(
        lines[1]["error"],
        "the line is not valid UTF-8 (invalid byte at offset 4); texts must be UTF-8"
    );
    assert_eq!(
        lines[2]["embedding"].as_array().unwrap().len(),
        384,
        "a last line without \\n"
    );
}

#[test]
fn tokens_list_each_token_with_its_text_and_offsets_and_say_when_a_text_was_cut() {
    let embedder = SentenceEmbedder::load(common::minilm_dir()).unwrap();
    let text = "Hello, Wörld!";
    let tokens = embedder.tokens(text).unwrap();
    assert!(!tokens.truncated);
    let listed: Vec<_> = tokens
        .tokens
        .iter()
        .map(|t| (t.id, t.text.as_str(), t.special, t.start, t.stop))
        .collect();
    // BERT's uncased vocabulary: the normaliser lowercases and strips the accent, but the
    // text of each token is what it was read from.
    assert_eq!(
        listed,
        vec![
            (101, "[CLS]", true, None, None),
            (7592, "Hello", false, Some(0), Some(5)),
            (1010, ",", false, Some(5), Some(6)),
            (2088, "Wörld", false, Some(7), Some(13)),
            (999, "!", false, Some(13), Some(14)),
            (102, "[SEP]", true, None, None),
        ]
    );
    // The same ids the embedder computes with.
    let ids: Vec<u32> = tokens.tokens.iter().map(|t| t.id).collect();
    assert_eq!(ids, embedder.tokenize(text).unwrap().ids());

    let long = long_text(20_000);
    let cut = embedder.tokens(&long).unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.len(), embedder.max_seq_length());
    assert_eq!(cut.tokens.last().map(|t| t.text.as_str()), Some("[SEP]"));
}
