//! The OpenAI and Hugging Face TEI routes of `modelhost-serve` for text models: the same
//! vectors, scores and tokens as the Open Inference Protocol route, the library in process
//! and sentence-transformers, and each protocol's own error shape.

mod common;
mod server;

use std::path::PathBuf;

use modelhost::Predictor;
use modelhost::models::classifier::{CrossEncoder, TextPair};
use modelhost::models::sentence::SentenceEmbedder;
use serde_json::{Value, json};

use server::*;

/// The OIP answer for `texts`, one vector each.
fn oip_embeddings(server: &Server, model: &str, texts: &[&str]) -> Vec<Vec<f32>> {
    let (status, _, body) = server.post_json(
        &format!("/v2/models/{model}/infer"),
        &json!({"inputs": [{"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts}]}),
    );
    assert_eq!(status, 200, "{body}");
    floats(&json_of(&body)["outputs"][0]["data"])
        .chunks(384)
        .map(<[f32]>::to_vec)
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-5, "{what}: components differ by {worst}");
}

fn from_base64(text: &str) -> Vec<f32> {
    base64::decode(text)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn openai_embeddings_equal_the_oip_answer_and_sentence_transformers_in_both_encodings() {
    let server = Server::start("openai", &["--max-client-batch-size", "8"]);
    let references: Vec<_> = common::references().into_iter().skip(20).take(5).collect();
    let texts: Vec<&str> = references.iter().map(|r| r.text.as_str()).collect();
    let oip = oip_embeddings(&server, "minilm", &texts);
    let library = SentenceEmbedder::load(common::minilm_dir()).unwrap();
    let tokens: usize = texts
        .iter()
        .map(|t| library.tokenize(t).unwrap().len())
        .sum();

    for format in ["float", "base64"] {
        let (status, _, body) = server.post_json(
            "/v1/embeddings",
            &json!({"model": "minilm", "input": texts, "encoding_format": format}),
        );
        assert_eq!(status, 200, "{body}");
        let answer = json_of(&body);
        assert_eq!(answer["object"], "list");
        assert_eq!(answer["model"], "minilm");
        assert_eq!(
            answer["usage"],
            json!({"prompt_tokens": tokens, "total_tokens": tokens})
        );
        let data = answer["data"].as_array().unwrap();
        assert_eq!(data.len(), 5);
        for (i, item) in data.iter().enumerate() {
            assert_eq!(
                (item["object"].clone(), item["index"].clone()),
                (json!("embedding"), json!(i))
            );
            let vector = match format {
                "float" => floats(&item["embedding"]),
                _ => from_base64(item["embedding"].as_str().unwrap()),
            };
            assert_close(&vector, &oip[i], format);
            assert!(cosine(&vector, &references[i].embedding) >= 0.9999);
        }
    }

    // One text (no model: the only embedder), and fewer dimensions: the first 64,
    // renormalised.
    let (status, _, body) = server.post_json(
        "/v1/embeddings",
        &json!({"input": texts[1], "dimensions": 64}),
    );
    assert_eq!(status, 200, "{body}");
    let short = floats(&json_of(&body)["data"][0]["embedding"]);
    assert_eq!(short.len(), 64);
    let norm: f32 = short.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    assert!(cosine(&short, &oip[1][..64]) > 0.99999);

    let cases: Vec<(Value, u16, Value, &str)> = vec![
        (
            json!({"model": "minilm", "input": [[101, 7592, 102]]}),
            400,
            json!("input"),
            "token-id arrays are not supported",
        ),
        (
            json!({"model": "minilm", "input": [1, 2, 3]}),
            400,
            json!("input"),
            "token-id arrays are not supported",
        ),
        (
            json!({"model": "minilm", "input": []}),
            400,
            json!("input"),
            "`input` is an empty list",
        ),
        (
            json!({"model": "minilm"}),
            400,
            json!("input"),
            "`input` is missing",
        ),
        (
            json!({"model": "minilm", "input": vec!["a"; 9]}),
            413,
            json!("input"),
            "the request has 9 inputs; this server takes at most 8 per request",
        ),
        (
            json!({"model": "minilm", "input": "a", "encoding_format": "int8"}),
            400,
            json!("encoding_format"),
            "use \"float\" or \"base64\"",
        ),
        (
            json!({"model": "minilm", "input": "a", "dimensions": 1000}),
            400,
            json!("dimensions"),
            "model `minilm` gives 1 to 384 dimensions",
        ),
        (
            json!({"model": "ada", "input": "a"}),
            404,
            json!("model"),
            "no model named `ada`",
        ),
        (
            json!({"model": "digits", "input": "a"}),
            400,
            Value::Null,
            "model `digits` is of kind mlp-classifier; /v1/embeddings serves text-embedder",
        ),
    ];
    for (request, want_status, param, message) in cases {
        let (status, _, body) = server.post_json("/v1/embeddings", &request);
        assert_eq!(status, want_status, "{request}: {body}");
        let error = &json_of(&body)["error"];
        assert_eq!(error["param"], param, "{body}");
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{body} lacks {message:?}"
        );
    }
    let (_, _, body) = server.post_json("/v1/embeddings", &json!({"model": "ada", "input": "a"}));
    assert_eq!(json_of(&body)["error"]["code"], "model_not_found");
    let (status, _, body) = server.request("POST", "/v1/embeddings", &[], b"{\"input\": ");
    assert_eq!(status, 400);
    assert!(
        json_of(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the request body is not valid JSON")
    );
}

/// A second embedder (MiniLM again, under another name) and a cross-encoder.
fn ranker_dir() -> PathBuf {
    let dir = common::scratch_dir("ranker-model");
    let weight: Vec<f32> = (0..384).map(|i| (i as f32 * 0.11).cos() * 0.3).collect();
    common::write_text_classifier(&dir, &["LABEL_0"], weight, vec![-0.1], json!({}));
    dir
}

#[test]
fn tei_embed_rerank_and_tokenize_answer_like_the_library_and_pick_models_by_name() {
    let ranker = ranker_dir();
    let minilm = common::minilm_dir();
    let server = Server::start_with("tei", &[], &[("ranker", &ranker), ("minilm-b", &minilm)]);
    let texts = ["A man is eating food.", "The weather is lovely today."];
    let oip = oip_embeddings(&server, "minilm", &texts);

    // Two embedders: /embed needs a name, by query or header.
    let (status, _, body) = server.post_json("/embed", &json!({"inputs": texts}));
    assert_eq!(status, 422, "{body}");
    assert_eq!(json_of(&body)["error_type"], "Validation");
    assert!(
        json_of(&body)["error"]
            .as_str()
            .unwrap()
            .contains("several models could answer /embed")
    );
    let (status, _, body) = server.post_json("/embed?model=minilm", &json!({"inputs": texts}));
    assert_eq!(status, 200, "{body}");
    let vectors: Vec<Vec<f32>> = json_of(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_eq!(vectors.len(), 2);
    assert_close(&vectors[0], &oip[0], "/embed");
    assert_close(&vectors[1], &oip[1], "/embed");
    let (status, _, body) = server.request(
        "POST",
        "/embed",
        &["X-Model: minilm-b"],
        json!({"inputs": texts[1], "normalize": true})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    assert_close(&floats(&json_of(&body)[0]), &oip[1], "/embed by header");

    // Too long: refused unless the request asks for truncation (TEI's default).
    let long = "word ".repeat(400);
    let (status, _, body) =
        server.post_json("/embed?model=minilm", &json!({"inputs": [texts[0], long]}));
    assert_eq!(status, 413, "{body}");
    assert_eq!(json_of(&body)["error_type"], "Validation");
    assert!(
        json_of(&body)["error"]
            .as_str()
            .unwrap()
            .contains("input 1 has more than 256 tokens")
    );
    let (status, _, body) = server.post_json(
        "/embed?model=minilm",
        &json!({"inputs": long, "truncate": true}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = server.post_json(
        "/embed?model=minilm",
        &json!({"inputs": "a", "normalize": false}),
    );
    assert_eq!(
        (status, json_of(&body)["error_type"].clone()),
        (422, json!("Validation"))
    );
    let (status, _, body) = server.post_json("/embed?model=minilm", &json!({"inputs": []}));
    assert_eq!(
        (status, json_of(&body)["error_type"].clone()),
        (400, json!("Empty"))
    );
    let (status, _, body) = server.post_json("/embed?model=nope", &json!({"inputs": "a"}));
    assert_eq!(status, 404, "{body}");

    // /rerank: the only cross-encoder, sorted by score, with the library's scores.
    let query = "What is the weather like?";
    let passages = [
        "It is sunny and warm.",
        "Bread is made of flour.",
        "Rain all week.",
    ];
    let library = Predictor::builder(CrossEncoder::load(&ranker).unwrap())
        .build()
        .unwrap();
    let want: Vec<_> = library
        .predict_many(passages.iter().map(|p| TextPair::new(query, *p)))
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for raw in [false, true] {
        let (status, _, body) = server.post_json(
            "/rerank",
            &json!({"query": query, "texts": passages, "raw_scores": raw, "return_text": true}),
        );
        assert_eq!(status, 200, "{body}");
        let ranks = json_of(&body);
        let ranks = ranks.as_array().unwrap();
        assert_eq!(ranks.len(), 3);
        let mut previous = f32::INFINITY;
        for rank in ranks {
            let index = rank["index"].as_u64().unwrap() as usize;
            let score = rank["score"].as_f64().unwrap() as f32;
            let expected = if raw {
                want[index].logit
            } else {
                want[index].score
            };
            assert!(
                (score - expected).abs() <= 1e-5,
                "{score} against {expected}"
            );
            assert!(score <= previous, "sorted by score, highest first: {body}");
            assert_eq!(rank["text"], passages[index]);
            previous = score;
        }
    }
    let (status, _, body) =
        server.post_json("/rerank", &json!({"query": query, "texts": passages}));
    assert_eq!(status, 200);
    assert!(json_of(&body)[0].get("text").is_none());
    let (status, _, body) = server.post_json(
        "/rerank?model=minilm",
        &json!({"query": "q", "texts": ["t"]}),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        json_of(&body)["error"]
            .as_str()
            .unwrap()
            .contains("model `minilm` is of kind text-embedder; /rerank serves cross-encoder")
    );

    // /tokenize: the embedder's own tokens with offsets.
    let embedder = SentenceEmbedder::load(&minilm).unwrap();
    let (status, _, body) = server.post_json(
        "/tokenize?model=minilm",
        &json!({"inputs": ["Hello, World!", "Hi"]}),
    );
    assert_eq!(status, 200, "{body}");
    let lists = json_of(&body);
    for (i, text) in ["Hello, World!", "Hi"].iter().enumerate() {
        let want = embedder.tokens(text).unwrap();
        let got = lists[i].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want.tokens) {
            assert_eq!(
                g,
                &json!({"id": w.id, "text": w.text, "special": w.special, "start": w.start, "stop": w.stop})
            );
        }
    }
    assert_eq!(
        lists[0][1],
        json!({"id": 7592, "text": "Hello", "special": false, "start": 0, "stop": 5})
    );
    let (_, _, body) = server.post_json(
        "/tokenize?model=minilm",
        &json!({"inputs": "Hi", "add_special_tokens": false}),
    );
    assert_eq!(json_of(&body)[0].as_array().map(Vec::len), Some(1));
    let _ = std::fs::remove_dir_all(&ranker);
}

#[test]
fn torchserve_takes_a_text_as_the_raw_body_and_answers_its_vector() {
    let server = Server::start("torchserve-text", &[]);
    let text = "A plain text body, not JSON.";
    let oip = oip_embeddings(&server, "minilm", &[text]);
    let (status, _, body) = server.post_raw("/predictions/minilm", "text/plain", text.as_bytes());
    assert_eq!(status, 200, "{body}");
    assert_close(&floats(&json_of(&body)), &oip[0], "TorchServe text");
    let (status, _, body) = server.post_json("/predictions/minilm/1", &json!({"text": text}));
    assert_eq!(status, 200, "{body}");
    assert_close(&floats(&json_of(&body)), &oip[0], "TorchServe JSON");
    let (status, _, body) = server.post_raw("/predictions/minilm", "text/plain", &[0xff, 0xfe]);
    assert_eq!(status, 400, "{body}");
    assert!(
        json_of(&body)["message"]
            .as_str()
            .unwrap()
            .contains("the body is not UTF-8 text")
    );
}

/// The sentence-transformers fixture with prompts (`query` by default, `passage`, ...; the
/// prompt left out of pooling) and sentence-transformers' vectors for it, by case.
fn prompt_fixture() -> (PathBuf, Value) {
    let dir = manifest_dir().join("tests/fixtures/st/mean-prompt");
    let refs: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("references.json")).unwrap())
            .unwrap();
    (dir, refs)
}

/// sentence-transformers' vector for text `i` of `tests/fixtures/st/texts.json` in `case`.
fn st_vector(refs: &Value, case: &str, i: usize) -> Vec<f32> {
    let case = (refs["cases"].as_array().unwrap().iter())
        .find(|c| c["name"] == case)
        .unwrap();
    floats(&case["embeddings"][i])
}

#[test]
fn tei_oip_and_natural_rows_take_a_prompt_name() {
    let (dir, refs) = prompt_fixture();
    let texts: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(dir.parent().unwrap().join("texts.json")).unwrap(),
    )
    .unwrap();
    let server = Server::start_with("prompts", &[], &[("st-prompt", &dir)]);
    let text = texts[0].as_str();

    // TEI: `prompt_name`, else the model's default prompt (`query`). The text is longer
    // than the fixture's 64 tokens: TEI refuses it unless asked to truncate.
    for (body, case) in [
        (
            json!({"inputs": text, "prompt_name": "passage", "truncate": true}),
            "passage",
        ),
        (
            json!({"inputs": text, "prompt_name": "none", "truncate": true}),
            "empty prompt",
        ),
        (json!({"inputs": text, "truncate": true}), "default prompt"),
    ] {
        let (status, _, answer) = server.post_json("/embed?model=st-prompt", &body);
        assert_eq!(status, 200, "{answer}");
        let got = floats(&json_of(&answer)[0]);
        let cos = cosine(&got, &st_vector(&refs, case, 0));
        assert!(cos >= 0.9999, "/embed {case}: {cos}");
    }
    let (status, _, answer) = server.post_json(
        "/embed?model=st-prompt",
        &json!({"inputs": text, "prompt_name": "qurey"}),
    );
    assert_eq!(status, 422, "{answer}");
    let error = json_of(&answer)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("qurey") && error.contains("document, none, passage, query"),
        "{error}"
    );

    // TEI /tokenize: the prompt's tokens first.
    let (status, _, answer) = server.post_json(
        "/tokenize?model=st-prompt",
        &json!({"inputs": "a cat", "prompt_name": "passage", "add_special_tokens": false}),
    );
    assert_eq!(status, 200, "{answer}");
    let tokens = json_of(&answer)[0].as_array().unwrap().clone();
    let words: Vec<&str> = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    // The fixture's small vocabulary reads most words letter by letter.
    assert_eq!(words.concat(), "passage:acat", "{answer}");
    let (status, _, answer) = server.post_json(
        "/tokenize?model=st-prompt",
        &json!({"inputs": "a cat", "prompt_name": "qurey"}),
    );
    assert_eq!(status, 422, "{answer}");

    // OIP: the request's parameters.
    let (status, _, answer) = server.post_json(
        "/v2/models/st-prompt/infer",
        &json!({"parameters": {"prompt_name": "passage"},
                "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": [texts[0], texts[1]]}]}),
    );
    assert_eq!(status, 200, "{answer}");
    let data = floats(&json_of(&answer)["outputs"][0]["data"]);
    for (i, got) in data.chunks(32).enumerate() {
        let cos = cosine(got, &st_vector(&refs, "passage", i));
        assert!(cos >= 0.9999, "OIP passage {i}: {cos}");
    }
    let (status, _, answer) = server.post_json(
        "/v2/models/st-prompt/infer",
        &json!({"parameters": {"prompt_name": "qurey"},
                "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("document, none, passage, query"),
        "{answer}"
    );

    // TF Serving rows: {"text", "prompt_name"} or {"text", "prompt"}.
    let (status, _, answer) = server.post_json(
        "/v1/models/st-prompt:predict",
        &json!({"instances": [{"text": text, "prompt_name": "passage"}, {"text": text, "prompt": "Represent this sentence for retrieval: "}, text]}),
    );
    assert_eq!(status, 200, "{answer}");
    let rows = json_of(&answer)["predictions"].as_array().unwrap().clone();
    for (row, case) in rows
        .iter()
        .zip(["passage", "prompt string", "default prompt"])
    {
        let cos = cosine(&floats(row), &st_vector(&refs, case, 0));
        assert!(cos >= 0.9999, "TF Serving {case}: {cos}");
    }
}
