//! Text classifier and cross-encoder: real heads trained here on MiniLM's frozen encoder,
//! written as Hugging Face `BertForSequenceClassification` directories, loaded back and
//! evaluated on held-out data.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::{minilm_dir, scratch_dir, write_text_classifier as write_model};
use modelhost::{
    Predictor, error::InputError, error::LoadError, error::PredictError,
    models::classifier::CrossEncoder, models::classifier::TextClassifier,
    models::classifier::TextPair, models::text::TextOptions,
};

/// Binary logistic regression by full-batch gradient descent; returns `(w, b)`.
fn train_logistic(x: &[Vec<f32>], y: &[f32]) -> (Vec<f32>, f32) {
    let d = x[0].len();
    let (mut w, mut b) = (vec![0f32; d], 0f32);
    let lr = 1.0;
    for _ in 0..400 {
        let (mut gw, mut gb) = (vec![0f32; d], 0f32);
        for (xi, yi) in x.iter().zip(y) {
            let z = b + xi.iter().zip(&w).map(|(a, c)| a * c).sum::<f32>();
            let err = 1.0 / (1.0 + (-z).exp()) - yi;
            gw.iter_mut().zip(xi).for_each(|(g, v)| *g += err * v);
            gb += err;
        }
        let n = x.len() as f32;
        w.iter_mut()
            .zip(&gw)
            .for_each(|(wi, g)| *wi -= lr * (g / n + 1e-3 * *wi));
        b -= lr * gb / n;
    }
    (w, b)
}

fn prose_or_code() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/prose-or-code.tsv");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (label, text) = l.split_once('\t').unwrap();
            (label.to_string(), text.to_string())
        })
        .collect()
}

#[test]
fn a_trained_text_classifier_separates_prose_from_code_on_held_out_lines() {
    let rows = prose_or_code();
    let (train, test) = rows.split_at(200);
    let dir = scratch_dir("text-classifier");
    // Step 1: any head, to read the pooled features the head will see.
    write_model(
        &dir,
        &["prose", "code"],
        vec![0.0; 768],
        vec![0.0; 2],
        serde_json::json!({}),
    );
    let untrained = TextClassifier::load(&dir).unwrap();
    assert_eq!(untrained.labels(), ["prose", "code"]);
    let batch: Vec<_> = train
        .iter()
        .map(|(_, t)| untrained.tokenize(t).unwrap())
        .collect();
    let features = untrained.features(&batch).unwrap();
    let y: Vec<f32> = train.iter().map(|(l, _)| f32::from(l == "code")).collect();
    let (w, b) = train_logistic(&features, &y);

    // Step 2: softmax over [-z/2, z/2] is sigmoid(z): the binary model as a 2-class head.
    let weight: Vec<f32> = w
        .iter()
        .map(|v| -v / 2.0)
        .chain(w.iter().map(|v| v / 2.0))
        .collect();
    write_model(
        &dir,
        &["prose", "code"],
        weight,
        vec![-b / 2.0, b / 2.0],
        serde_json::json!({}),
    );
    let classifier = TextClassifier::load(&dir).unwrap();
    let predictor = Predictor::builder(classifier)
        .max_batch_size(16)
        .build()
        .unwrap();
    let texts: Vec<String> = test.iter().map(|(_, t)| t.clone()).collect();
    let answers = predictor.predict_many(texts);
    let mut correct = 0;
    for ((label, text), answer) in test.iter().zip(answers) {
        let c = answer.unwrap();
        assert!((c.scores.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{text}");
        assert_eq!(c.score, c.scores[c.index]);
        correct += usize::from(&c.label == label);
    }
    let accuracy = correct as f64 / test.len() as f64;
    println!(
        "prose-or-code held-out accuracy: {accuracy:.3} ({correct}/{})",
        test.len()
    );
    assert!(accuracy >= 0.9, "held-out accuracy {accuracy}");

    // The head's maths: logit difference over the features equals the trained z.
    let one = predictor
        .model()
        .tokenize("fn main() { println!(\"hi\"); }")
        .unwrap();
    let f = predictor
        .model()
        .features(std::slice::from_ref(&one))
        .unwrap();
    let z = b + f[0].iter().zip(&w).map(|(a, c)| a * c).sum::<f32>();
    let c = &predictor.model().classify_batch(&[one]).unwrap()[0];
    assert!((c.scores[1] - 1.0 / (1.0 + (-z).exp())).abs() < 1e-5);
}

#[test]
fn multi_label_heads_give_independent_sigmoid_scores() {
    let dir = scratch_dir("multi-label");
    let mut weight = vec![0.0; 3 * 384];
    weight[384] = 1.0; // label b: the first pooled feature
    write_model(
        &dir,
        &["a", "b", "c"],
        weight,
        vec![2.0, 0.0, -2.0],
        serde_json::json!({"problem_type": "multi_label_classification"}),
    );
    let classifier = TextClassifier::load(&dir).unwrap();
    let t = classifier.tokenize("hello world").unwrap();
    let f = classifier.features(std::slice::from_ref(&t)).unwrap()[0][0];
    let c = &classifier.classify_batch(&[t]).unwrap()[0];
    let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
    assert!((c.scores[0] - sig(2.0)).abs() < 1e-6);
    assert!((c.scores[1] - sig(f)).abs() < 1e-6);
    assert!((c.scores[2] - sig(-2.0)).abs() < 1e-6);
    assert_eq!(c.label, "a");
}

#[test]
fn classifier_configs_that_cannot_work_are_refused_with_the_reason() {
    let dir = scratch_dir("one-label");
    write_model(
        &dir,
        &["score"],
        vec![0.0; 384],
        vec![0.0],
        serde_json::json!({}),
    );
    let err = TextClassifier::load(&dir).unwrap_err();
    assert!(matches!(err, LoadError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("CrossEncoder"), "{err}");

    let dir = scratch_dir("two-labels-cross");
    write_model(
        &dir,
        &["a", "b"],
        vec![0.0; 768],
        vec![0.0; 2],
        serde_json::json!({}),
    );
    let err = CrossEncoder::load(&dir).unwrap_err();
    assert!(err.to_string().contains("exactly one output"), "{err}");

    let dir = scratch_dir("bad-id2label");
    write_model(
        &dir,
        &["a", "b"],
        vec![0.0; 768],
        vec![0.0; 2],
        serde_json::json!({"id2label": {"0": "a", "7": "b"}}),
    );
    let err = TextClassifier::load(&dir).unwrap_err();
    assert!(err.to_string().contains("`id2label` key `7`"), "{err}");

    // A trillion labels would be a trillion strings: refused by the weight's shape first.
    let dir = scratch_dir("huge-num-labels");
    write_model(
        &dir,
        &["a", "b"],
        vec![0.0; 768],
        vec![0.0; 2],
        serde_json::json!({"num_labels": 1_000_000_000_000u64}),
    );
    let err = TextClassifier::load(&dir).unwrap_err();
    assert!(matches!(err, LoadError::Config { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("the classifier weight has 2 outputs; at most 2 labels are allowed"),
        "{err}"
    );
}

/// A search-style query for a text (its three longest words, lowercased, in text order)
/// and the text as the passage.
fn query_and_passage(text: &str) -> Option<(String, String)> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    if words.len() < 8 {
        return None;
    }
    let mut by_len: Vec<usize> = (0..words.len()).collect();
    by_len.sort_by_key(|&i| std::cmp::Reverse(words[i].len()));
    let mut keep = by_len[..3].to_vec();
    keep.sort_unstable();
    let query: Vec<&str> = keep.iter().map(|&i| words[i].as_str()).collect();
    Some((query.join(" "), text.to_string()))
}

#[test]
fn a_trained_cross_encoder_ranks_the_passage_a_query_came_from_first() {
    let corpus = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/assets/drift/reference.txt"),
    )
    .unwrap();
    let pairs: Vec<(String, String)> = corpus
        .lines()
        .filter_map(query_and_passage)
        .take(600)
        .collect();
    assert_eq!(pairs.len(), 600);
    let (train, test) = pairs.split_at(500);

    let dir = scratch_dir("cross-encoder");
    write_model(
        &dir,
        &["LABEL_0"],
        vec![0.0; 384],
        vec![0.0],
        serde_json::json!({}),
    );
    let untrained = CrossEncoder::load(&dir).unwrap();
    // Positive: the passage the query came from; negatives: two others.
    let mut pairs = Vec::new();
    let mut y = Vec::new();
    for (i, (q, p)) in train.iter().enumerate() {
        pairs.push(untrained.tokenize(&TextPair::new(q, p)).unwrap());
        y.push(1.0);
        for k in [1, 2] {
            let other = &train[(i + 13 * k) % train.len()].1;
            pairs.push(untrained.tokenize(&TextPair::new(q, other)).unwrap());
            y.push(0.0);
        }
    }
    let features = untrained.features(&pairs).unwrap();
    let (w, b) = train_logistic(&features, &y);
    write_model(&dir, &["LABEL_0"], w, vec![b], serde_json::json!({}));

    let ranker = Predictor::builder(CrossEncoder::load(&dir).unwrap())
        .max_batch_size(32)
        .build()
        .unwrap();
    // Rank each held-out query's passage among it and 4 others (chance: 20 %).
    let (mut top1, mut wins) = (0, 0);
    for (i, (q, p)) in test.iter().enumerate() {
        let candidates: Vec<TextPair> = (0..5)
            .map(|k| {
                TextPair::new(
                    q,
                    if k == 0 {
                        p
                    } else {
                        &test[(i + 7 * k) % test.len()].1
                    },
                )
            })
            .collect();
        let scores: Vec<f32> = ranker
            .predict_many(candidates)
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                assert!((0.0..=1.0).contains(&r.score));
                assert!((r.score - 1.0 / (1.0 + (-r.logit).exp())).abs() < 1e-6);
                r.score
            })
            .collect();
        top1 += usize::from(scores[1..].iter().all(|&s| scores[0] > s));
        wins += scores[1..].iter().filter(|&&s| scores[0] > s).count();
    }
    let rate = top1 as f64 / test.len() as f64;
    let auc = wins as f64 / (4 * test.len()) as f64;
    println!("cross-encoder held-out: top-1 of 5 {rate:.3}, pairwise wins {auc:.3}");
    // A head on frozen features learns word overlap only partly: measured 0.42 and 0.69
    // here. Chance is 0.2 and 0.5; the bounds sit several standard errors above it.
    assert!(rate >= 0.3, "top-1 rate {rate}");
    assert!(auc >= 0.6, "pairwise win rate {auc}");
}

#[test]
fn bad_pairs_get_typed_errors_naming_the_field_and_the_limit() {
    let dir = scratch_dir("cross-errors");
    write_model(
        &dir,
        &["LABEL_0"],
        vec![0.0; 384],
        vec![0.0],
        serde_json::json!({}),
    );
    let strict = TextOptions {
        truncate: false,
        max_seq_length: Some(16),
        ..TextOptions::default()
    };
    let ranker = Predictor::builder(CrossEncoder::load_with(&dir, strict).unwrap())
        .build()
        .unwrap();
    match ranker.predict(TextPair::new("", "a passage")) {
        Err(PredictError::Input(InputError::Invalid { field, .. })) => assert_eq!(field, "query"),
        other => panic!("{other:?}"),
    }
    match ranker.predict(TextPair::new("a query", " ")) {
        Err(PredictError::Input(InputError::Invalid { field, .. })) => assert_eq!(field, "passage"),
        other => panic!("{other:?}"),
    }
    let long = "word ".repeat(20);
    match ranker.predict(TextPair::new("a query", long)) {
        Err(PredictError::Input(InputError::TooLong { tokens, max })) => {
            assert_eq!(max, 16);
            assert_eq!(tokens, 3 + 2 + 20);
        }
        other => panic!("{other:?}"),
    }
    // With truncation on (the default) the same pair is cut to the limit and scored.
    let ranker = CrossEncoder::load(&dir).unwrap();
    let t = ranker
        .tokenize(&TextPair::new("a query", "word ".repeat(600)))
        .unwrap();
    assert_eq!(t.len(), 512);
    // `tokens` says so, and tells the passage's tokens (type 1, offsets in the passage).
    let listed = ranker
        .tokens(&TextPair::new("a query", "word ".repeat(600)))
        .unwrap();
    assert!(listed.truncated);
    assert_eq!(listed.len(), 512);
    let ids: Vec<u32> = listed.tokens.iter().map(|t| t.id).collect();
    assert_eq!(ids, t.ids());
    let second = &listed.tokens[4];
    assert_eq!(
        (
            second.text.as_str(),
            second.type_id,
            second.start,
            second.stop
        ),
        ("word", 1, Some(0), Some(4))
    );
    let short = ranker
        .tokens(&TextPair::new("a query", "a passage"))
        .unwrap();
    assert!(!short.truncated);
    assert_eq!(short.len(), 7);
    // A pair is tokenized whole (which of two long texts is longer decides the split), so
    // a text past the input limit is refused even with truncation on.
    let huge = "word ".repeat(300_000);
    match ranker.tokenize(&TextPair::new("a query", huge.clone())) {
        Err(InputError::TooManyBytes { bytes, max, .. }) => {
            assert_eq!((bytes, max), (huge.len(), 1 << 20))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t.type_ids().iter().filter(|&&x| x == 0).count(), 4);
}

#[test]
fn the_head_computes_berts_pooler_and_classifier_on_the_cls_vector() {
    // An independent computation: the [CLS] vector from the embedder (CLS pooling, no
    // normalisation), then tanh(Wp·cls + bp) and Wc·pooled + bc in candle ops.
    let dir = scratch_dir("head-maths");
    let weight: Vec<f32> = (0..3 * 384)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 200.0)
        .collect();
    let bias = vec![0.1, -0.2, 0.3];
    write_model(
        &dir,
        &["a", "b", "c"],
        weight.clone(),
        bias.clone(),
        serde_json::json!({}),
    );
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true}"#,
    )
    .unwrap();
    let text = "The quick brown fox jumps over the lazy dog.";
    let embedder = modelhost::models::sentence::SentenceEmbedder::load(&dir).unwrap();
    let cls = embedder
        .embed_batch(&[embedder.tokenize(text).unwrap()])
        .unwrap()
        .remove(0)
        .into_vec();
    let tensors =
        candle_core::safetensors::load(minilm_dir().join("model.safetensors"), &Device::Cpu)
            .unwrap();
    let x = Tensor::from_vec(cls, (1, 384), &Device::Cpu).unwrap();
    let pooled = x
        .matmul(&tensors["pooler.dense.weight"].t().unwrap())
        .unwrap()
        .broadcast_add(&tensors["pooler.dense.bias"])
        .unwrap()
        .tanh()
        .unwrap();
    let wc = Tensor::from_vec(weight, (3, 384), &Device::Cpu).unwrap();
    let bc = Tensor::from_vec(bias, 3, &Device::Cpu).unwrap();
    let logits = pooled
        .matmul(&wc.t().unwrap())
        .unwrap()
        .broadcast_add(&bc)
        .unwrap();
    let expected = candle_nn::ops::softmax_last_dim(&logits)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
        .remove(0);

    let classifier = TextClassifier::load(&dir).unwrap();
    let got = &classifier
        .classify_batch(&[classifier.tokenize(text).unwrap()])
        .unwrap()[0];
    for (a, b) in got.scores.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-5, "{:?} vs {expected:?}", got.scores);
    }
}

#[test]
fn cross_encoder_activations_follow_both_sentence_transformers_config_keys() {
    let pair = TextPair::new(
        "what is a fox",
        "The quick brown fox jumps over the lazy dog.",
    );
    let weight: Vec<f32> = (0..384).map(|i| ((i % 7) as f32 - 3.0) / 10.0).collect();
    for (extra, identity) in [
        (serde_json::json!({}), false),
        // sentence-transformers before v4 (e.g. ms-marco-MiniLM-L-6-v2) wrote this key.
        (
            serde_json::json!({"sbert_ce_default_activation_function": "torch.nn.modules.linear.Identity"}),
            true,
        ),
        (
            serde_json::json!({"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}}),
            true,
        ),
        (
            serde_json::json!({"sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Sigmoid"}, "sbert_ce_default_activation_function": "torch.nn.modules.linear.Identity"}),
            false,
        ),
    ] {
        let dir = scratch_dir("ce-activation");
        write_model(&dir, &["LABEL_0"], weight.clone(), vec![0.5], extra.clone());
        let ranker = CrossEncoder::load(&dir).unwrap();
        let r = ranker
            .score_batch(&[ranker.tokenize(&pair).unwrap()])
            .unwrap()[0];
        let want = if identity {
            r.logit
        } else {
            1.0 / (1.0 + (-r.logit).exp())
        };
        assert_eq!(r.score, want, "{extra}");
    }
    let dir = scratch_dir("ce-tanh");
    write_model(
        &dir,
        &["LABEL_0"],
        weight,
        vec![0.5],
        serde_json::json!({"sbert_ce_default_activation_function": "torch.nn.modules.activation.Tanh"}),
    );
    let err = CrossEncoder::load(&dir).unwrap_err();
    assert!(
        err.to_string().contains("activation function `Tanh`"),
        "{err}"
    );
    // A pair needs room for three special tokens and a token of each text.
    let short = TextOptions {
        max_seq_length: Some(4),
        ..TextOptions::default()
    };
    let dir = scratch_dir("ce-short");
    write_model(
        &dir,
        &["LABEL_0"],
        vec![0.0; 384],
        vec![0.0],
        serde_json::json!({}),
    );
    let err = CrossEncoder::load_with(&dir, short).unwrap_err();
    assert!(err.to_string().contains("it must be at least 5"), "{err}");
}

#[test]
fn a_text_tokenized_by_another_model_is_refused_not_misread() {
    let dir = scratch_dir("foreign-tokens");
    write_model(
        &dir,
        &["a", "b"],
        vec![0.0; 768],
        vec![0.0; 2],
        serde_json::json!({}),
    );
    let short = TextOptions {
        max_seq_length: Some(8),
        ..TextOptions::default()
    };
    let classifier = TextClassifier::load_with(&dir, short).unwrap();
    let long = TextClassifier::load(&dir).unwrap();
    let foreign = long.tokenize(&"word ".repeat(20)).unwrap();
    let err = classifier.classify_batch(&[foreign]).unwrap_err();
    assert!(
        err.to_string().contains("not tokenized for this model"),
        "{err}"
    );
}
