"""The server (modelhost-serve) checked with NVIDIA's own HTTP client.

Usage: python tests/triton/test_tritonclient.py HOST:PORT REPOSITORY

The server must serve REPOSITORY, laid out by scripts/model-repo.sh: minilm/1 (the
sentence embedder), digits/1 and digits/2. Every check is a function named check_*, run in
file order; the last line printed is "N passed, M failed" and the exit status is 1 if any
failed. Most checks use the client's defaults, which send and ask for binary tensor data;
the JSON path is checked against them.
"""

import json
import pathlib
import sys
import traceback
import urllib.error
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = pathlib.Path(__file__).resolve().parents[2]
URL = sys.argv[1]
REPOSITORY = pathlib.Path(sys.argv[2])
client = httpclient.InferenceServerClient(url=URL)


def references(n):
    lines = (ROOT / "tests/data/minilm-reference.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:n]]


def held_back_digits():
    rows = np.loadtxt(ROOT / "examples/assets/digits/digits.csv", delimiter=",", dtype=np.float32)
    held = rows[4::5]  # every fifth image is held back from training
    return held[:, :64], held[:, 64].astype(np.int64)


def expect_error(status, fragment, call):
    try:
        call()
    except InferenceServerException as e:
        assert e.status() == str(status), f"status {e.status()}, expected {status}: {e.message()}"
        assert fragment in e.message(), f"{e.message()!r} does not contain {fragment!r}"
        return
    raise AssertionError(f"expected an error {status}, got an answer")


def check_server_live_and_ready():
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata()["name"] == "modelhost"


def check_models_ready():
    assert client.is_model_ready("minilm")
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert not client.is_model_ready("no-such-model")


def check_model_metadata():
    meta = client.get_model_metadata("minilm")
    assert meta["name"] == "minilm" and meta["versions"] == ["1"], meta
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}], meta
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}], meta
    meta = client.get_model_metadata("digits")
    assert meta["versions"] == ["1", "2"], meta
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}], meta
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label", "class"], meta
    assert client.get_model_metadata("digits", "1")["versions"] == ["1"]


def check_repository_index():
    index = client.get_model_repository_index()
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
        ("digits", "1", "READY"),
        ("digits", "2", "READY"),
        ("minilm", "1", "READY"),
    ], index


def check_embedder_matches_sentence_transformers():
    refs = references(32)
    texts = np.array([r["text"] for r in refs], dtype=object)
    text = httpclient.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(texts, binary_data=False)
    wanted = httpclient.InferRequestedOutput("embedding", binary_data=False)
    result = client.infer("minilm", [text], outputs=[wanted], request_id="embed-1")
    got = result.as_numpy("embedding")
    assert got.shape == (32, 384), got.shape
    assert result.get_response()["id"] == "embed-1"
    want = np.array([r["embedding"] for r in refs], dtype=np.float32)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.9999, f"min cosine {cos.min()}"


def check_embedder_with_default_outputs_and_a_column_of_texts():
    # No requested outputs: the client asks for binary outputs (binary_data_output). Shape
    # [N, 1] is a column of texts.
    ref = references(2)
    texts = np.array([[r["text"]] for r in ref], dtype=object)
    text = httpclient.InferInput("text", [2, 1], "BYTES")
    text.set_data_from_numpy(texts, binary_data=False)
    result = client.infer("minilm", [text])
    assert "binary_data_size" in result.get_output("embedding")["parameters"]
    got = result.as_numpy("embedding")
    want = np.array([r["embedding"] for r in ref], dtype=np.float32)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.9999, f"min cosine {cos.min()}"


def check_embedder_binary_by_default_matches_json_and_sentence_transformers():
    refs = references(32)
    texts = np.array([r["text"] for r in refs] + ["Grüße — ünïcödé ✓"], dtype=object)
    # The client's defaults: BYTES in as binary data, the output asked for as binary data.
    text = httpclient.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(texts)
    assert text._get_binary_data() is not None, "the default sends binary data"
    result = client.infer("minilm", [text], outputs=[httpclient.InferRequestedOutput("embedding")])
    output = result.get_output("embedding")
    assert output["parameters"]["binary_data_size"] == len(texts) * 384 * 4, output
    assert "data" not in output, output
    binary = result.as_numpy("embedding")
    assert binary.dtype == np.float32 and binary.shape == (len(texts), 384), binary.shape
    # The same texts as JSON, the answer as JSON: the same numbers, to float rounding (a
    # dynamic batch's size may differ between two requests and move the last bits).
    text = httpclient.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(texts, binary_data=False)
    wanted = httpclient.InferRequestedOutput("embedding", binary_data=False)
    as_json = client.infer("minilm", [text], outputs=[wanted]).as_numpy("embedding")
    assert np.allclose(binary, as_json, rtol=0, atol=1e-6), np.abs(binary - as_json).max()
    want = np.array([r["embedding"] for r in refs], dtype=np.float32)
    got = binary[: len(refs)]
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.9999, f"min cosine {cos.min()}"


def check_digits_binary_by_default_matches_json():
    images, labels = held_back_digits()
    pixels = httpclient.InferInput("pixels", list(images.shape), "FP32")
    pixels.set_data_from_numpy(images)
    result = client.infer("digits", [pixels])  # no outputs named: every output in binary
    for name in ("probabilities", "label", "class"):
        assert "binary_data_size" in result.get_output(name)["parameters"], name
    pixels_json = httpclient.InferInput("pixels", list(images.shape), "FP32")
    pixels_json.set_data_from_numpy(images, binary_data=False)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("probabilities", "label", "class")]
    as_json = client.infer("digits", [pixels_json], outputs=outputs)
    probabilities, json_probabilities = result.as_numpy("probabilities"), as_json.as_numpy("probabilities")
    assert np.allclose(probabilities, json_probabilities, rtol=0, atol=1e-6), np.abs(probabilities - json_probabilities).max()
    assert np.array_equal(result.as_numpy("class"), as_json.as_numpy("class"))
    assert result.as_numpy("class").dtype == np.int64
    labels_binary = [l.decode() for l in result.as_numpy("label")]
    assert labels_binary == [l.decode() if isinstance(l, bytes) else l for l in as_json.as_numpy("label")]
    accuracy = float((result.as_numpy("class") == labels).mean())
    assert accuracy >= 0.95, f"held-back accuracy {accuracy:.3f}"


def check_digits_classifies_the_held_back_images():
    images, labels = held_back_digits()
    pixels = httpclient.InferInput("pixels", list(images.shape), "FP32")
    pixels.set_data_from_numpy(images, binary_data=False)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("class", "label", "probabilities")]
    result = client.infer("digits", [pixels], outputs=outputs)
    assert result.get_response()["model_version"] == "2"
    classes = result.as_numpy("class")
    accuracy = float((classes == labels).mean())
    assert accuracy >= 0.95, f"held-back accuracy {accuracy:.3f}"
    assert [l.decode() if isinstance(l, bytes) else l for l in result.as_numpy("label")] == [str(c) for c in classes]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (len(labels), 10)
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert (probabilities.argmax(1) == classes).all()
    print(f"    digits: {len(labels)} held-back images, accuracy {accuracy:.3f}")


def check_a_pinned_version_answers():
    images, labels = held_back_digits()
    pixels = httpclient.InferInput("pixels", [1, 64], "FP32")
    pixels.set_data_from_numpy(images[:1])
    result = client.infer("digits", [pixels], model_version="1",
                          outputs=[httpclient.InferRequestedOutput("class")])
    assert result.get_response()["model_version"] == "1"
    assert int(result.as_numpy("class")[0]) == int(labels[0])


def check_errors_reach_the_client_with_status_and_message():
    # Binary data, the client's default, as everywhere from here on.
    pixels = httpclient.InferInput("pixels", [1, 63], "FP32")
    pixels.set_data_from_numpy(np.zeros((1, 63), dtype=np.float32))
    expect_error(400, "the model takes [64] or [N, 64]", lambda: client.infer("digits", [pixels]))
    wrong = httpclient.InferInput("pixels", [1, 64], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 64), dtype=np.float64))
    expect_error(400, "has datatype FP64; the model takes FP32", lambda: client.infer("digits", [wrong]))
    ok = httpclient.InferInput("pixels", [1, 64], "FP32")
    ok.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    expect_error(404, "no model named `resnet`", lambda: client.infer("resnet", [ok]))
    expect_error(404, "has no version or label `9`", lambda: client.infer("digits", [ok], model_version="9"))


def check_malformed_binary_data_is_a_400_that_says_why():
    # A shape of 10^12 values with 256 bytes of data: refused before anything is allocated.
    body = json.dumps({"inputs": [{"name": "pixels", "shape": [1000000, 1000000], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 256}}]}).encode()
    request = urllib.request.Request(
        f"http://{URL}/v2/models/digits/infer", data=body + bytes(256), method="POST",
        headers={"Inference-Header-Content-Length": str(len(body))})
    try:
        urllib.request.urlopen(request)
    except urllib.error.HTTPError as e:
        assert e.code == 400, e.code
        message = json.load(e)["error"]
        assert "1000000000000 values of 4 bytes" in message, message
        return
    raise AssertionError("expected a 400")


def check_openapi_document_is_valid_openapi_3():
    from openapi_spec_validator import validate

    with urllib.request.urlopen(f"http://{URL}/v2/openapi.json") as response:
        spec = json.load(response)
    validate(spec)
    assert spec["openapi"].startswith("3.")
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/{model}",
                 "/v2/models/{model}/versions/{version}/infer", "/metrics"):
        assert path in spec["paths"], path


def check_models_unload_and_load_and_the_index_follows():
    ok = httpclient.InferInput("pixels", [1, 64], "FP32")
    ok.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    client.unload_model("digits")
    assert not client.is_model_ready("digits")
    expect_error(404, "model `digits` is unloaded", lambda: client.infer("digits", [ok]))
    index = client.get_model_repository_index()
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
        ("digits", "1", "UNAVAILABLE"),
        ("digits", "2", "UNAVAILABLE"),
        ("minilm", "1", "READY"),
    ], index
    client.load_model("digits")
    assert client.is_model_ready("digits")
    assert client.infer("digits", [ok]).get_response()["model_version"] == "2"
    # A model added to the repository while serving, loaded by name, then unloaded again.
    added = REPOSITORY / "digits-added"
    added.mkdir(exist_ok=True)
    (added / "3").symlink_to(ROOT / "examples/assets/digits")
    assert not client.is_model_ready("digits-added")
    client.load_model("digits-added")
    assert client.is_model_ready("digits-added")
    assert client.infer("digits-added", [ok]).get_response()["model_version"] == "3"
    expect_error(404, "no directory `resnet`", lambda: client.load_model("resnet"))
    expect_error(400, "is not supported", lambda: client.load_model("digits", config="{}"))
    client.unload_model("digits-added")
    states = {(m["name"], m["version"]): m["state"] for m in client.get_model_repository_index()}
    assert states[("digits-added", "3")] == "UNAVAILABLE" and states[("digits", "2")] == "READY", states


def main():
    checks = [(name, f) for name, f in globals().items() if name.startswith("check_") and callable(f)]
    passed = failed = 0
    for name, check in checks:
        try:
            check()
            passed += 1
            print(f"ok   {name}")
        except Exception:
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
