//! The HTTP server (`modelhost-serve`, `src/bin/modelhost-serve/`) as a client sees it: the Open Inference
//! Protocol endpoints, every bad request's status and message, the README's curl lines, and
//! a graceful stop on SIGTERM that still answers the request in flight.
//!
//! Each test starts the server binary (which cargo builds for this test: run it with
//! `--features server`) on a free loopback port against a model repository of symlinks in
//! a temporary directory.

mod common;

mod server;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use modelhost::{Predictor, models::mlp::MlpClassifier};
use serde_json::{Value, json};

use server::*;

#[test]
fn health_metadata_and_infer_answer_with_the_models_numbers() {
    let server = Server::start("infer", &["--cache-mb", "16"]);

    let (status, _, body) = server.get("/v2/health/live");
    assert_eq!((status, json_of(&body)), (200, json!({"live": true})));
    let (status, _, body) = server.get("/v2");
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["name"], "modelhost");
    let (status, _, body) = server.get("/v2/models/digits/versions/1/ready");
    assert_eq!(
        (status, json_of(&body)["ready"].clone()),
        (200, json!(true))
    );

    // Metadata: kinds recognised from the directories' own files.
    let (status, _, body) = server.get("/v2/models/minilm");
    assert_eq!(status, 200);
    assert_eq!(
        json_of(&body),
        json!({
            "name": "minilm", "versions": ["1"], "platform": "modelhost_text_embedder",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}],
        })
    );
    let (status, _, body) = server.get("/v2/models/digits");
    assert_eq!(status, 200);
    let meta = json_of(&body);
    assert_eq!(meta["versions"], json!(["1", "2"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}])
    );
    let (_, _, body) = server.get("/v2/models/digits/versions/1");
    assert_eq!(json_of(&body)["versions"], json!(["1"]));

    // The embedder: a batch of reference texts, compared with sentence-transformers.
    let references: Vec<_> = common::references().into_iter().take(16).collect();
    let texts: Vec<&str> = references.iter().map(|r| r.text.as_str()).collect();
    let (status, _, body) = server.post_json(
        "/v2/models/minilm/infer",
        &json!({"id": "q1", "inputs": [{"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts}]}),
    );
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    assert_eq!(answer["model_name"], "minilm");
    assert_eq!(answer["model_version"], "1");
    assert_eq!(answer["id"], "q1");
    let output = &answer["outputs"][0];
    assert_eq!(output["name"], "embedding");
    assert_eq!(output["shape"], json!([16, 384]));
    let data = floats(&output["data"]);
    for (row, reference) in data.chunks(384).zip(&references) {
        let c = cosine(row, &reference.embedding);
        assert!(c >= 0.9999, "cosine {c} for {:?}", reference.text);
    }

    // The digits model: every held-back image in one [N, 64] request to the stable
    // version (2), checked against the labels and against the library in process.
    let (images, labels) = held_back_digits();
    let flat: Vec<f32> = images.iter().flatten().copied().collect();
    let (status, _, body) = server.post_json(
        "/v2/models/digits/infer",
        &json!({"inputs": [{"name": "pixels", "shape": [images.len(), 64], "datatype": "FP32", "data": flat}]}),
    );
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    assert_eq!(answer["model_version"], "2");
    let outputs = answer["outputs"].as_array().unwrap();
    let names: Vec<&str> = outputs
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["probabilities", "label", "class"]);
    let classes: Vec<usize> = outputs[2]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as usize)
        .collect();
    let correct = classes.iter().zip(&labels).filter(|(a, b)| a == b).count();
    let accuracy = correct as f64 / labels.len() as f64;
    assert!(accuracy >= 0.95, "held-back accuracy {accuracy}");
    let local = Predictor::builder(
        MlpClassifier::load(manifest_dir().join("examples/assets/digits")).unwrap(),
    )
    .build()
    .unwrap();
    let probabilities = floats(&outputs[0]["data"]);
    for (i, answer) in local.predict_many(images).into_iter().enumerate() {
        let answer = answer.unwrap();
        assert_eq!(classes[i], answer.index);
        for (got, want) in probabilities[i * 10..(i + 1) * 10]
            .iter()
            .zip(&answer.scores)
        {
            assert!((got - want).abs() <= 1e-6, "row {i}: {got} vs {want}");
        }
    }

    // A pinned version and a subset of the outputs.
    let zero = &held_back_digits().0[0];
    let (status, _, body) = server.post_json(
        "/v2/models/digits/versions/1/infer",
        &json!({"inputs": [{"name": "pixels", "shape": [64], "datatype": "FP32", "data": zero}],
                "outputs": [{"name": "label"}]}),
    );
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    assert_eq!(answer["model_version"], "1");
    assert_eq!(
        answer["outputs"],
        json!([{"name": "label", "datatype": "BYTES", "shape": [1], "data": [labels[0].to_string()]}])
    );

    // Metrics count what was served, per model and version.
    let (status, head, body) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/plain; version=0.0.4"));
    assert!(
        body.contains(
            r#"modelhost_requests_total{model="minilm",version="1",outcome="success"} 16"#
        ),
        "{body}"
    );
    // The same text again is answered from the prediction cache (--cache-mb), same numbers.
    let (status, _, body) = server.post_json(
        "/v2/models/minilm/infer",
        &json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [texts[0]]}]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        floats(&json_of(&body)["outputs"][0]["data"]),
        data[..384].to_vec()
    );
    let (_, _, body) = server.get("/metrics");
    assert!(
        body.contains(
            r#"modelhost_requests_total{model="minilm",version="1",outcome="cache_hit"} 1"#
        ),
        "{body}"
    );
    let index = json_of(&server.request("POST", "/v2/repository/index", &[], b"").2);
    assert_eq!(index.as_array().unwrap().len(), 3);
}

#[test]
fn every_bad_request_gets_its_status_and_a_message_that_says_what_to_fix() {
    let server = Server::start("errors", &["--max-body-bytes", "65536"]);
    let pixels = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "pixels", "shape": shape, "datatype": datatype, "data": data}]});
    let zeros = |n: usize| json!(vec![0.0; n]);
    let infer = "/v2/models/digits/infer";
    let bad_row = [vec![0.0; 63], vec![-1.0]].concat();
    let raw =
        |path: &str, headers: &[&str], body: &[u8]| server.request("POST", path, headers, body);
    let cases: Vec<(&str, Response, u16, &str)> = vec![
        (
            "wrong datatype",
            server.post_json(infer, &pixels(json!([1, 64]), "BYTES", zeros(64))),
            400,
            "input `pixels` has datatype BYTES; the model takes FP32",
        ),
        (
            "wrong shape",
            server.post_json(infer, &pixels(json!([1, 63]), "FP32", zeros(63))),
            400,
            "input `pixels` has shape [1, 63]; the model takes [64] or [N, 64]",
        ),
        (
            "shape and data disagree",
            server.post_json(infer, &pixels(json!([2, 64]), "FP32", zeros(64))),
            400,
            "input `pixels` has shape [2, 64], which holds 128 values, but `data` has 64",
        ),
        (
            "missing input",
            server.post_json(infer, &json!({"inputs": []})),
            400,
            "missing input: model `digits` takes one input, `pixels` (FP32, shape [-1, 64])",
        ),
        (
            "unknown input",
            server.post_json(
                infer,
                &json!({"inputs": [{"name": "image", "shape": [64], "datatype": "FP32", "data": zeros(64)}]}),
            ),
            400,
            "model `digits` has no input `image`; it takes one input, `pixels`",
        ),
        (
            "value out of range",
            server.post_json(infer, &pixels(json!([64]), "FP32", json!([[99.0], vec![0.0; 63]]))),
            400,
            "`pixels`[0] is 99; allowed values lie in [0, 16]",
        ),
        (
            "a bad row of many",
            server.post_json(
                infer,
                &pixels(json!([2, 64]), "FP32", json!([vec![0.0; 64], bad_row])),
            ),
            400,
            "row 1: `pixels`[63] is -1; allowed values lie in [0, 16]",
        ),
        (
            "text that is not a string",
            server.post_json(
                "/v2/models/minilm/infer",
                &json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [7]}]}),
            ),
            400,
            "input `text`: data[0] is 7; BYTES data must be JSON strings",
        ),
        (
            "unknown output",
            server.post_json(
                infer,
                &json!({"inputs": [{"name": "pixels", "shape": [64], "datatype": "FP32", "data": zeros(64)}],
                        "outputs": [{"name": "logits"}]}),
            ),
            400,
            "model `digits` has no output `logits`; its outputs are [\"probabilities\", \"label\", \"class\"]",
        ),
        (
            "malformed JSON",
            raw(infer, &[], b"{\"inputs\": [}"),
            400,
            "the request body is not valid JSON: expected value at line 1 column 13",
        ),
        (
            "JSON that is not an infer request",
            raw(infer, &[], b"{\"input\": []}"),
            400,
            "the request is not an infer request: missing field `inputs`",
        ),
        (
            "unknown model",
            server.post_json("/v2/models/resnet/infer", &pixels(json!([64]), "FP32", zeros(64))),
            404,
            "no model named `resnet`; this server serves [\"minilm\", \"digits\"]",
        ),
        (
            "unknown version",
            server.post_json("/v2/models/digits/versions/7/infer", &json!({})),
            404,
            "model `digits` has no version or label `7`; it has versions [\"1\", \"2\"]",
        ),
        (
            "unknown model's metadata",
            server.get("/v2/models/resnet"),
            404,
            "no model named `resnet`",
        ),
        (
            "oversized body",
            raw(infer, &[], &vec![b' '; 100_000]),
            413,
            "the request body is over the limit of 65536 bytes; send fewer rows per request or start the server with a larger --max-body-bytes",
        ),
        (
            "binary tensor extension",
            raw(infer, &["Inference-Header-Content-Length: 2"], b"{}"),
            415,
            "the binary tensor data extension is not supported; send tensors as JSON",
        ),
        (
            "unknown endpoint",
            server.get("/v3/models/digits"),
            404,
            "no endpoint GET /v3/models/digits",
        ),
        (
            "wrong method",
            server.get(infer),
            405,
            "GET is not allowed on /v2/models/digits/infer",
        ),
    ];
    for (case, (status, head, body), want_status, want_message) in cases {
        assert_eq!(status, want_status, "{case}: {body}");
        assert!(
            head.contains("content-type: application/json"),
            "{case}: {head}"
        );
        let message = json_of(&body)["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: no error message in {body}"))
            .to_string();
        assert!(
            message.contains(want_message),
            "{case}: {message:?} does not contain {want_message:?}"
        );
    }
    // The server is still serving after all of that.
    let (status, _, _) = server.post_json(infer, &pixels(json!([64]), "FP32", zeros(64)));
    assert_eq!(status, 200);
}

#[test]
fn the_readme_curl_lines_work_as_written() {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let section = readme
        .split("## Serving over HTTP")
        .nth(1)
        .expect("README has a section \"Serving over HTTP\"");
    let section = section.split("\n## ").next().unwrap_or(section);
    // `curl ...   # expected output` lines; the expected text may end in `...`.
    let lines: Vec<(&str, &str)> = section
        .lines()
        .filter(|l| l.starts_with("curl "))
        .map(|l| {
            let (command, expected) = l.split_once("  # ").unwrap_or((l, ""));
            (command.trim(), expected.trim().trim_end_matches("..."))
        })
        .collect();
    assert!(lines.len() >= 19, "curl lines in the README: {lines:?}");

    // The repository of `scripts/model-repo.sh --all`, and a cross-encoder as `ranker`.
    let (image, ranker) = (image_dir(), cross_encoder_dir());
    let wine = manifest_dir().join("examples/assets/wine");
    let extra = [
        ("wine", wine.as_path()),
        ("digit-images", &image),
        ("ranker", &ranker),
    ];
    let server = Server::start_with("readme", &[], &extra);
    for (command, expected) in lines {
        let command = command.replace("localhost:8000", &server.addr);
        let out = Command::new("sh")
            .args(["-c", &command])
            .current_dir(manifest_dir())
            .output()
            .expect("run sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command}: {out:?}");
        assert!(!stdout.trim().is_empty(), "{command}: no output");
        assert!(
            stdout.contains(expected),
            "{command}:\n{stdout}\ndoes not contain the README's\n{expected}"
        );
    }
    let _ = std::fs::remove_dir_all(&image);
    let _ = std::fs::remove_dir_all(&ranker);
}

#[test]
fn sigterm_answers_the_request_in_flight_then_exits_zero() {
    let mut server = Server::start("sigterm", &[]);
    // Enough texts that the request is still being computed when SIGTERM arrives.
    let references = common::references();
    let texts: Vec<&str> = references
        .iter()
        .cycle()
        .take(1000)
        .map(|r| r.text.as_str())
        .collect();
    let body = json!({"inputs": [{"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts}]})
        .to_string();
    let addr = server.addr.clone();
    let in_flight = std::thread::spawn(move || {
        request(
            &addr,
            "POST",
            "/v2/models/minilm/infer",
            &[],
            body.as_bytes(),
        )
    });
    // Wait until the embedder has accepted rows of it (and has not answered them all).
    let started = Instant::now();
    loop {
        if server.gauge("modelhost_in_flight_requests", "minilm") > 0.0 {
            break;
        }
        assert!(
            !in_flight.is_finished(),
            "the request finished before it was seen in flight"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the request never showed up in flight"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let (status, _, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    let data = floats(&answer["outputs"][0]["data"]);
    assert_eq!(data.len(), 1000 * 384);
    for (row, reference) in data.chunks(384).zip(references.iter().cycle()).take(200) {
        assert!(cosine(row, &reference.embedding) >= 0.9999);
    }
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "the server exited with {exit}");
}

/// Whether a lower-cased response head carries `Retry-After: 1`.
fn retry_after_one(head: &str) -> bool {
    head.lines().any(|l| l.trim() == "retry-after: 1")
}

#[test]
fn a_full_queue_answers_429_with_retry_after_and_the_queued_request_still_gets_its_answer() {
    // One queue slot and a long batch window: the first request waits in the queue for
    // company, so the second finds it full.
    let server = Server::start(
        "queue-full",
        &[
            "--queue-capacity",
            "1",
            "--max-batch-size",
            "8",
            "--max-delay-ms",
            "3000",
        ],
    );
    let (images, _) = held_back_digits();
    // What the served version (2) answers, from the library in process.
    let library = Predictor::builder(
        MlpClassifier::load(manifest_dir().join("examples/assets/digits")).unwrap(),
    )
    .build()
    .unwrap();
    let expected: Vec<u64> = library
        .predict_many(images[..2].to_vec())
        .into_iter()
        .map(|a| a.unwrap().index as u64)
        .collect();
    let body = |i: usize| {
        json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": images[i]}]})
            .to_string()
    };
    let addr = server.addr.clone();
    let first_body = body(0);
    let first = std::thread::spawn(move || {
        request(
            &addr,
            "POST",
            "/v2/models/digits/infer",
            &[],
            first_body.as_bytes(),
        )
    });
    // Wait until the first request sits in the queue.
    let started = Instant::now();
    loop {
        if server.gauge("modelhost_queue_depth", "digits") == 1.0 {
            break;
        }
        if first.is_finished() {
            let (status, _, body) = first.join().unwrap();
            panic!("the first request was not held in the queue: {status} {body}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first request never showed up in the queue"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let (status, head, refused) =
        server.request("POST", "/v2/models/digits/infer", &[], body(1).as_bytes());
    assert_eq!(status, 429, "{refused}");
    assert!(retry_after_one(&head), "no Retry-After: 1 in {head}");
    assert_eq!(
        json_of(&refused)["error"],
        "the queue is full (1 requests waiting); retry later or raise queue_capacity"
    );

    let (status, _, answer) = first.join().unwrap();
    assert_eq!(status, 200, "{answer}");
    let class = json_of(&answer)["outputs"][2]["data"][0].as_u64().unwrap();
    assert_eq!(class, expected[0]);

    // The refused request was not computed; sent again once the queue is free, it is.
    let (status, _, retried) =
        server.request("POST", "/v2/models/digits/infer", &[], body(1).as_bytes());
    assert_eq!(status, 200, "{retried}");
    let class = json_of(&retried)["outputs"][2]["data"][0].as_u64().unwrap();
    assert_eq!(class, expected[1]);
}

#[test]
fn requests_past_their_deadline_answer_503_with_retry_after_and_are_not_computed() {
    // One text per batch and a 20 ms deadline: sixteen long texts at once cannot all start
    // within 20 ms on any machine (one takes tens of milliseconds), so some wait past it.
    let server = Server::start(
        "deadline",
        &["--max-batch-size", "1", "--deadline-ms", "20"],
    );
    let mut references = common::references();
    references.sort_by_key(|r| std::cmp::Reverse(r.text.len()));
    references.truncate(16);
    let answers: Vec<(usize, Response)> = std::thread::scope(|s| {
        let handles: Vec<_> = references
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let body = json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [r.text]}]})
                    .to_string();
                let addr = &server.addr;
                s.spawn(move || {
                    let answer = request(addr, "POST", "/v2/models/minilm/infer", &[], body.as_bytes());
                    (i, answer)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut late = Vec::new();
    for (i, (status, head, body)) in &answers {
        match status {
            200 => {
                let embedding = floats(&json_of(body)["outputs"][0]["data"]);
                assert!(cosine(&embedding, &references[*i].embedding) >= 0.9999);
            }
            503 => {
                assert!(retry_after_one(head), "no Retry-After: 1 in {head}");
                let message = json_of(body)["error"].as_str().unwrap().to_string();
                assert!(
                    message.contains("past its deadline of 20ms; it was not computed"),
                    "{message}"
                );
                late.push(*i);
            }
            other => panic!("request {i} got status {other}: {body}"),
        }
    }
    assert!(!late.is_empty(), "no request of sixteen waited past 20 ms");

    // A late request was not computed (errors are not cached): sent again alone, it gets
    // its answer. A few tries, in case a busy machine delays even a lone request 20 ms.
    let r = &references[late[0]];
    let again =
        json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [r.text]}]});
    let (status, _, body) = (0..5)
        .map(|_| server.post_json("/v2/models/minilm/infer", &again))
        .find(|(status, _, _)| *status != 503)
        .expect("five lone tries all missed a 20 ms deadline");
    assert_eq!(status, 200, "{body}");
    let embedding = floats(&json_of(&body)["outputs"][0]["data"]);
    assert!(cosine(&embedding, &r.embedding) >= 0.9999);
}

#[test]
fn a_fine_tuned_text_classifier_directory_is_served_with_the_librarys_numbers() {
    // MiniLM with a two-label head, saved as transformers saves a
    // `BertForSequenceClassification`: the server recognises it from its config.json.
    let dir = common::scratch_dir("classifier-to-serve");
    let weight: Vec<f32> = (0..2 * 384).map(|i| (i as f32 * 0.7).sin() * 0.2).collect();
    common::write_text_classifier(
        &dir,
        &["negative", "positive"],
        weight,
        vec![0.1, -0.1],
        json!({}),
    );
    let server = Server::start_with("text-classifier", &[], &[("topic", &dir)]);

    let (status, _, body) = server.get("/v2/models/topic");
    assert_eq!(status, 200, "{body}");
    let meta = json_of(&body);
    assert_eq!(meta["platform"], "modelhost_text_classifier");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "text", "datatype": "BYTES", "shape": [-1]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "class", "datatype": "INT64", "shape": [-1]},
        ])
    );

    let texts: Vec<String> = common::references()
        .into_iter()
        .take(20)
        .map(|r| r.text)
        .collect();
    let (status, _, body) = server.post_json(
        "/v2/models/topic/infer",
        &json!({"inputs": [{"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts}]}),
    );
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    let probabilities = floats(&answer["outputs"][0]["data"]);
    let labels = answer["outputs"][1]["data"].as_array().unwrap();
    let classes = answer["outputs"][2]["data"].as_array().unwrap();
    assert_eq!(answer["outputs"][0]["shape"], json!([20, 2]));

    let library =
        Predictor::builder(modelhost::models::classifier::TextClassifier::load(&dir).unwrap())
            .build()
            .unwrap();
    let expected = library.predict_many(texts.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    for (i, want) in expected.into_iter().enumerate() {
        let want = want.unwrap();
        let got = &probabilities[2 * i..2 * i + 2];
        for (g, w) in got.iter().zip(&want.scores) {
            assert!(
                (g - w).abs() <= 1e-6,
                "text {i}: {got:?} against {:?}",
                want.scores
            );
        }
        assert!((got[0] + got[1] - 1.0).abs() < 1e-5);
        assert_eq!(labels[i], want.label.as_str());
        assert_eq!(classes[i], want.index);
        seen.insert(want.index);
    }
    assert_eq!(seen.len(), 2, "the head should tell these texts apart");

    let (status, _, body) = server.post_json(
        "/v2/models/topic/infer",
        &json!({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
    );
    assert_eq!(status, 400);
    assert_eq!(
        json_of(&body)["error"],
        "input `text` has datatype FP32; the model takes BYTES"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sighup_during_start_up_is_kept_for_a_rescan_instead_of_killing_the_server() {
    let root = model_repository("hup-at-start", &[]);
    let mut child = Command::new(server_binary())
        .arg("--models")
        .arg(&root)
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    // The server says it is loading once its SIGHUP handler is in place, before any model
    // has loaded (loading MiniLM takes a while); the signal lands during start-up.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("loading models from") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "stderr ended first"
        );
    }
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    // A server killed by the signal has no first line: `attach` fails the test.
    let server = Server::attach(child, root);
    let (status, _, body) = server.request(
        "POST",
        "/v2/models/digits/infer",
        &[],
        json!({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": vec![0.0; 64]}]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
}
