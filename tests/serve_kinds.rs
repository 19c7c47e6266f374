//! Every model kind of the library served by `modelhost-serve`, each recognised from its
//! directory, over the Open Inference Protocol, TF Serving / KServe V1 and TorchServe: the
//! answers equal what the library computes in process.

mod common;
mod server;

use std::io::Cursor;
use std::path::PathBuf;

use image::{DynamicImage, GrayImage, ImageFormat};
use modelhost::Predictor;
use modelhost::models::classifier::{CrossEncoder, TextPair};
use modelhost::models::image::ImageClassifier;
use modelhost::models::tabular::{FeatureValue, TabularModel, TabularRow};
use serde_json::{Value, json};

use server::*;

/// A regression over every feature type with hand-set weights (as tests/tabular.rs).
fn house_dir() -> PathBuf {
    let dir = common::scratch_dir("house-model");
    common::write_house_model(&dir, common::house_schema());
    dir
}

/// A digit (64 values in 0..=16) as dark ink on white paper, a PNG file.
fn digit_png(values: &[f32]) -> Vec<u8> {
    let gray = GrayImage::from_fn(8, 8, |x, y| {
        let v = values[(y * 8 + x) as usize];
        image::Luma([255 - (v * 255.0 / 16.0).round() as u8])
    });
    let mut bytes = Vec::new();
    DynamicImage::ImageLuma8(gray)
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    bytes
}

fn b64(bytes: &[u8]) -> String {
    base64::encode(bytes)
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-5, "{what}: {got:?} against {want:?}");
    }
}

fn error_of(body: &str) -> String {
    json_of(body)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_cross_encoder_directory_is_served_with_the_librarys_scores() {
    let dir = cross_encoder_dir();
    let server = Server::start_with("cross-encoder", &[], &[("ranker", &dir)]);
    let (status, _, body) = server.get("/v2/models/ranker");
    assert_eq!(status, 200, "{body}");
    let meta = json_of(&body);
    assert_eq!(meta["platform"], "modelhost_cross_encoder");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "query", "datatype": "BYTES", "shape": [-1]},
               {"name": "passage", "datatype": "BYTES", "shape": [-1]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "score", "datatype": "FP32", "shape": [-1]},
               {"name": "logit", "datatype": "FP32", "shape": [-1]}])
    );

    let query = "how do plants make energy";
    let passages: Vec<String> = common::references()
        .into_iter()
        .take(6)
        .map(|r| r.text)
        .collect();
    let library = Predictor::builder(CrossEncoder::load(&dir).unwrap())
        .build()
        .unwrap();
    let want: Vec<_> = library
        .predict_many(passages.iter().map(|p| TextPair::new(query, p)))
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let scores: Vec<f32> = want.iter().map(|r| r.score).collect();
    let logits: Vec<f32> = want.iter().map(|r| r.logit).collect();

    // OIP: one query for every passage.
    let (status, _, body) = server.post_json(
        "/v2/models/ranker/infer",
        &json!({"inputs": [
            {"name": "query", "shape": [1], "datatype": "BYTES", "data": [query]},
            {"name": "passage", "shape": [passages.len()], "datatype": "BYTES", "data": passages}]}),
    );
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    assert_close(
        &floats(&answer["outputs"][0]["data"]),
        &scores,
        "OIP scores",
    );
    assert_close(
        &floats(&answer["outputs"][1]["data"]),
        &logits,
        "OIP logits",
    );

    // TF Serving rows, and columns.
    let instances: Vec<Value> = passages
        .iter()
        .map(|p| json!({"query": query, "passage": p}))
        .collect();
    let (status, _, body) = server.post_json(
        "/v1/models/ranker:predict",
        &json!({"instances": instances}),
    );
    assert_eq!(status, 200, "{body}");
    let predictions = json_of(&body)["predictions"].clone();
    let got: Vec<f32> = (0..6)
        .map(|i| predictions[i]["score"].as_f64().unwrap() as f32)
        .collect();
    assert_close(&got, &scores, "TF Serving scores");
    let queries = vec![query; passages.len()];
    let (status, _, body) = server.post_json(
        "/v1/models/ranker/versions/1:predict",
        &json!({"inputs": {"query": queries, "passage": passages}}),
    );
    assert_eq!(status, 200, "{body}");
    let outputs = json_of(&body)["outputs"].clone();
    assert_eq!(outputs.as_array().map(Vec::len), Some(6));
    assert!((outputs[5]["logit"].as_f64().unwrap() as f32 - logits[5]).abs() <= 1e-5);

    // TorchServe: a JSON pair.
    let (status, _, body) = server.post_json(
        "/predictions/ranker",
        &json!({"query": query, "passage": passages[2]}),
    );
    assert_eq!(status, 200, "{body}");
    assert!((json_of(&body)["score"].as_f64().unwrap() as f32 - scores[2]).abs() <= 1e-5);

    // A query without passages.
    let (status, _, body) = server.post_json(
        "/v2/models/ranker/infer",
        &json!({"inputs": [{"name": "query", "shape": [1], "datatype": "BYTES", "data": [query]}]}),
    );
    assert_eq!(status, 400);
    assert!(
        error_of(&body).contains("takes two inputs, `query` and `passage`"),
        "{body}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_image_classifier_takes_png_files_as_base64_in_json_and_as_raw_bodies() {
    let dir = image_dir();
    let server = Server::start_with("image", &[], &[("digit-images", &dir)]);
    let (status, _, body) = server.get("/v2/models/digit-images");
    assert_eq!(status, 200, "{body}");
    let meta = json_of(&body);
    assert_eq!(meta["platform"], "modelhost_image_classifier");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "image", "datatype": "BYTES", "shape": [-1]}])
    );

    let (images, labels) = held_back_digits();
    let pngs: Vec<Vec<u8>> = images[..12].iter().map(|v| digit_png(v)).collect();
    let library = Predictor::builder(ImageClassifier::load(&dir).unwrap())
        .build()
        .unwrap();
    let want: Vec<_> = library
        .predict_many(pngs.clone())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let right = want
        .iter()
        .zip(&labels)
        .filter(|(w, l)| w.index == **l)
        .count();
    assert!(
        right >= 10,
        "the library reads the PNGs: {right} of 12 right"
    );

    // OIP: base64 strings and {"b64": ...} objects in one tensor.
    let data: Vec<Value> = pngs
        .iter()
        .enumerate()
        .map(|(i, p)| match i % 2 {
            0 => json!(b64(p)),
            _ => json!({"b64": b64(p)}),
        })
        .collect();
    let (status, _, body) = server.post_json(
        "/v2/models/digit-images/infer",
        &json!({"inputs": [{"name": "image", "shape": [12], "datatype": "BYTES", "data": data}]}),
    );
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    let probabilities = floats(&answer["outputs"][0]["data"]);
    for (i, w) in want.iter().enumerate() {
        assert_close(&probabilities[i * 10..(i + 1) * 10], &w.scores, "OIP");
        assert_eq!(answer["outputs"][2]["data"][i], w.index);
    }

    // TF Serving, KServe's {"b64": ...} instances.
    let instances: Vec<Value> = pngs[..3].iter().map(|p| json!({"b64": b64(p)})).collect();
    let (status, _, body) = server.post_json(
        "/v1/models/digit-images:predict",
        &json!({"instances": instances}),
    );
    assert_eq!(status, 200, "{body}");
    let predictions = json_of(&body)["predictions"].clone();
    for (i, w) in want[..3].iter().enumerate() {
        assert_eq!(predictions[i]["label"], w.label.as_str());
        assert_close(&floats(&predictions[i]["scores"]), &w.scores, "TF Serving");
    }

    // TorchServe: the PNG file itself is the body.
    let (status, _, body) = server.post_raw("/predictions/digit-images", "image/png", &pngs[4]);
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    assert_eq!(answer["index"], want[4].index);
    assert_close(&floats(&answer["scores"]), &want[4].scores, "TorchServe");

    // Bad images: not base64, not an image.
    let (status, _, body) = server.post_json(
        "/v2/models/digit-images/infer",
        &json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}]}),
    );
    assert_eq!(status, 400);
    assert!(
        error_of(&body).contains("data[0]: the image is not valid base64"),
        "{body}"
    );
    let (status, _, body) = server.post_raw("/predictions/digit-images", "image/png", b"GIF89a");
    assert_eq!(
        (status, json_of(&body)["type"].clone()),
        (400, json!("BadRequestException"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The held-back wines as rows, and their classes.
fn held_back_wines() -> Vec<TabularRow> {
    let text =
        std::fs::read_to_string(manifest_dir().join("examples/assets/wine/wine.csv")).unwrap();
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .enumerate()
        .filter(|(i, _)| i % 5 == 4)
        .map(|(_, line)| {
            let values = line.split(',').map(|v| v.trim().parse::<f64>().unwrap());
            let row = names[..names.len() - 1]
                .iter()
                .zip(values)
                .map(|(n, v)| (n.to_string(), FeatureValue::Number(v)))
                .collect();
            TabularRow(row)
        })
        .collect()
}

/// `rows` as one column per feature.
fn columns(rows: &[TabularRow]) -> serde_json::Map<String, Value> {
    let mut columns = serde_json::Map::new();
    for row in rows {
        for (name, value) in &row.0 {
            let column = columns.entry(name.clone()).or_insert_with(|| json!([]));
            column
                .as_array_mut()
                .unwrap()
                .push(serde_json::to_value(value).unwrap());
        }
    }
    columns
}

#[test]
fn tabular_models_take_one_input_per_feature_and_answer_classes_or_values() {
    let house = house_dir();
    let wine = manifest_dir().join("examples/assets/wine");
    let server = Server::start_with("tabular", &[], &[("wine", &wine), ("house", &house)]);
    let (_, _, body) = server.get("/v2/models/house");
    let meta = json_of(&body);
    assert_eq!(meta["platform"], "modelhost_tabular");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "area", "datatype": "FP64", "shape": [-1]},
               {"name": "rooms", "datatype": "INT64", "shape": [-1]},
               {"name": "garden", "datatype": "BOOL", "shape": [-1]},
               {"name": "city", "datatype": "BYTES", "shape": [-1]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "value", "datatype": "FP64", "shape": [-1]}])
    );

    // The wine classifier: every held-back wine, one FP64 input per feature.
    let rows = held_back_wines();
    let library = Predictor::builder(TabularModel::load(&wine).unwrap())
        .build()
        .unwrap();
    let want: Vec<_> = library
        .predict_many(rows.clone())
        .into_iter()
        .map(|o| o.unwrap().class().cloned().unwrap())
        .collect();
    let inputs: Vec<Value> = columns(&rows)
        .into_iter()
        .map(|(name, data)| json!({"name": name, "shape": [rows.len()], "datatype": "FP64", "data": data}))
        .collect();
    let (status, _, body) = server.post_json("/v2/models/wine/infer", &json!({"inputs": inputs}));
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    let probabilities = floats(&answer["outputs"][0]["data"]);
    for (i, w) in want.iter().enumerate() {
        assert_close(&probabilities[i * 3..(i + 1) * 3], &w.scores, "OIP wine");
        assert_eq!(answer["outputs"][1]["data"][i], w.label.as_str());
    }

    // TF Serving columns and rows, TorchServe one row.
    let (status, _, body) = server.post_json(
        "/v1/models/wine:predict",
        &json!({"inputs": columns(&rows[..5])}),
    );
    assert_eq!(status, 200, "{body}");
    let outputs = json_of(&body)["outputs"].clone();
    for (i, w) in want[..5].iter().enumerate() {
        assert_close(
            &floats(&outputs[i]["class"]["scores"]),
            &w.scores,
            "TF Serving columns",
        );
    }
    let (status, _, body) = server.post_json(
        "/v1/models/wine:predict",
        &json!({"instances": &rows[5..7]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body)["predictions"][1]["class"]["label"],
        want[6].label.as_str()
    );
    let (status, _, body) = server.post_json("/predictions/wine", &json!(rows[7]));
    assert_eq!(status, 200, "{body}");
    assert_close(
        &floats(&json_of(&body)["class"]["scores"]),
        &want[7].scores,
        "TorchServe",
    );

    // The regression: every feature type, the defaults left out of one request.
    let house_rows = [
        json!({"area": 120.0, "rooms": 4, "garden": true, "city": "bergen"}),
        json!({"area": 80.5, "rooms": 2, "garden": false, "city": "tromso"}),
    ];
    let houses: Vec<TabularRow> = house_rows
        .iter()
        .map(|r| serde_json::from_value(r.clone()).unwrap())
        .collect();
    let priced = Predictor::builder(TabularModel::load(&house).unwrap())
        .build()
        .unwrap();
    let prices: Vec<f64> = priced
        .predict_many(houses)
        .into_iter()
        .map(|o| o.unwrap().value().unwrap())
        .collect();
    let (status, _, body) = server.post_json(
        "/v2/models/house/infer",
        &json!({"inputs": [
            {"name": "area", "shape": [2], "datatype": "FP64", "data": [120.0, 80.5]},
            {"name": "rooms", "shape": [2], "datatype": "INT64", "data": [4, 2]},
            {"name": "garden", "shape": [2], "datatype": "BOOL", "data": [true, false]},
            {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["bergen", "tromso"]}]}),
    );
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    assert_eq!(answer["outputs"][0]["name"], "value");
    assert_eq!(answer["outputs"][0]["datatype"], "FP64");
    for (i, want) in prices.iter().enumerate() {
        let got = answer["outputs"][0]["data"][i].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9, "{got} against {want}");
    }
    let (status, _, body) = server.post_json(
        "/v2/models/house/infer",
        &json!({"inputs": [
            {"name": "area", "shape": [1], "datatype": "FP32", "data": [80.5]},
            {"name": "rooms", "shape": [1], "datatype": "INT32", "data": [2]}]}),
    );
    assert_eq!(status, 200, "{body}");
    let default_row: TabularRow =
        serde_json::from_value(json!({"area": 80.5, "rooms": 2})).unwrap();
    let want = priced.predict(default_row).unwrap().value().unwrap();
    let got = json_of(&body)["outputs"][0]["data"][0].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-9);

    let cases = [
        (
            json!([{"name": "area", "shape": [1], "datatype": "FP64", "data": [80.0]}]),
            "missing inputs [\"rooms\"]",
        ),
        (
            json!([{"name": "area", "shape": [1], "datatype": "BYTES", "data": ["big"]},
                {"name": "rooms", "shape": [1], "datatype": "INT64", "data": [2]}]),
            "input `area` has datatype BYTES; the feature is a number",
        ),
        (
            json!([{"name": "area", "shape": [2], "datatype": "FP64", "data": [80.0, 90.0]},
                {"name": "rooms", "shape": [1], "datatype": "INT64", "data": [2]}]),
            "send every feature with the same number of rows",
        ),
        (
            json!([{"name": "floors", "shape": [1], "datatype": "INT64", "data": [2]}]),
            "model `house` has no input `floors`; its inputs are [\"area\", \"rooms\", \"garden\", \"city\"]",
        ),
        (
            json!([{"name": "area", "shape": [1], "datatype": "FP64", "data": [9000.0]},
                {"name": "rooms", "shape": [1], "datatype": "INT64", "data": [2]}]),
            "`area`",
        ),
    ];
    for (inputs, message) in cases {
        let (status, _, body) =
            server.post_json("/v2/models/house/infer", &json!({"inputs": inputs}));
        assert_eq!(status, 400, "{body}");
        assert!(
            error_of(&body).contains(message),
            "{body} lacks {message:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&house);
}

#[test]
fn tf_serving_and_torchserve_routes_answer_status_and_refuse_what_they_cannot_serve() {
    let server = Server::start("tf-torch", &["--max-client-batch-size", "3"]);
    let (status, _, body) = server.get("/v1/models/digits");
    assert_eq!(status, 200, "{body}");
    let status_of = |v: &str| json!({"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}});
    assert_eq!(
        json_of(&body),
        json!({"name": "digits", "ready": true, "model_version_status": [status_of("2"), status_of("1")]})
    );
    let (_, _, body) = server.get("/v1/models/digits/versions/1");
    assert_eq!(
        json_of(&body)["model_version_status"],
        json!([status_of("1")])
    );
    let (status, _, body) = server.get("/ping");
    assert_eq!(
        (status, json_of(&body)),
        (200, json!({"status": "Healthy"}))
    );

    // The same digit by every route and version, against the library.
    let (images, _) = held_back_digits();
    let library = |dir: &str| {
        Predictor::builder(
            modelhost::models::mlp::MlpClassifier::load(manifest_dir().join(dir)).unwrap(),
        )
        .build()
        .unwrap()
        .predict(images[3].clone())
        .unwrap()
    };
    let (v1, v2) = (
        library("examples/assets/digits-v1"),
        library("examples/assets/digits"),
    );
    let (_, _, body) = server.post_json(
        "/v1/models/digits:predict",
        &json!({"instances": [images[3]]}),
    );
    assert_close(
        &floats(&json_of(&body)["predictions"][0]["scores"]),
        &v2.scores,
        "TF v2",
    );
    let (_, _, body) = server.post_json(
        "/v1/models/digits/labels/stable:predict",
        &json!({"instances": [{"pixels": images[3]}]}),
    );
    assert_close(
        &floats(&json_of(&body)["predictions"][0]["scores"]),
        &v2.scores,
        "TF label",
    );
    let (_, _, body) = server.post_json("/predictions/digits/1", &json!(images[3]));
    assert_close(
        &floats(&json_of(&body)["scores"]),
        &v1.scores,
        "TorchServe v1",
    );

    let ts_error = |r: Response| {
        (
            r.0,
            json_of(&r.2)["type"].clone(),
            json_of(&r.2)["message"].clone(),
        )
    };
    let (status, kind, message) = ts_error(server.post_json("/predictions/resnet", &json!([0])));
    assert_eq!((status, kind), (404, json!("ModelNotFoundException")));
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("no model named `resnet`")
    );
    let (status, kind, message) = ts_error(server.post_json("/predictions/digits", &json!([1, 2])));
    assert_eq!((status, kind), (400, json!("BadRequestException")));
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("[1,2] is not a row of 64 numbers"),
        "{message}"
    );

    let zeros = vec![0.0; 64];
    let cases: Vec<(Response, u16, &str)> = vec![
        (
            server.post_json("/v1/models/resnet:predict", &json!({"instances": [zeros]})),
            404,
            "no model named `resnet`",
        ),
        (
            server.post_json("/v1/models/digits/versions/7:predict", &json!({})),
            404,
            "model `digits` has no version or label `7`",
        ),
        (
            server.post_json("/v1/models/digits:classify", &json!({})),
            404,
            "`:classify` is not served; send POST /v1/models/digits:predict",
        ),
        (
            server.get("/v1/models/digits:predict"),
            405,
            "GET is not allowed on /v1/models/digits:predict; POST it",
        ),
        (
            server.post_json(
                "/v1/models/digits:predict",
                &json!({"instances": [zeros, zeros, zeros, zeros]}),
            ),
            413,
            "the request has 4 rows; this server takes at most 3 per request (--max-client-batch-size)",
        ),
        (
            server.post_json(
                "/v1/models/digits:predict",
                &json!({"instances": [zeros], "inputs": [zeros]}),
            ),
            400,
            "send either `instances` (rows) or `inputs` (columns)",
        ),
        (
            server.post_json(
                "/v1/models/digits:predict",
                &json!({"instances": [zeros, [1.0]]}),
            ),
            400,
            "instance 1: [1.0] is not a row of 64 numbers",
        ),
        (
            server.post_json("/v1/models/digits:predict", &json!({"instances": []})),
            400,
            "`instances` is empty; send a non-empty list of rows",
        ),
        (
            server.post_json(
                "/v1/models/minilm:predict",
                &json!({"inputs": {"text": ["a", "b"], "other": ["c"]}}),
            ),
            400,
            "input `text` has 2 values and another input 1",
        ),
    ];
    for (i, ((status, head, body), want_status, want)) in cases.into_iter().enumerate() {
        assert_eq!(status, want_status, "case {i}: {body}");
        assert!(
            head.contains("content-type: application/json"),
            "case {i}: {head}"
        );
        assert!(
            error_of(&body).contains(want),
            "case {i}: {body} lacks {want:?}"
        );
    }
}
