"""Write fuzz/seeds/oip/: infer requests as tritonclient 2.73 encodes them (its own
generate_request_body), JSON and binary tensor data, framed for fuzz_targets/oip.rs: a first
byte choosing the Inference-Header-Content-Length header (0 none, 1 two bytes of
little-endian length follow, 2 header text up to a newline, 3 the whole rest's length),
then the body.

Usage: python scripts/make-oip-seeds.py   (in a virtualenv with tritonclient[http] and numpy,
e.g. the one scripts/triton-test.sh makes)
"""

import pathlib
import struct

import numpy as np
import tritonclient.http as httpclient

OUT = pathlib.Path(__file__).resolve().parents[1] / "fuzz/seeds/oip"


def body(inputs, outputs=None, **kwargs):
    return httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kwargs)


def framed(request, json_size):
    if json_size is None:
        return b"\x00" + request
    return b"\x01" + struct.pack("<H", json_size) + request


def tensor(name, array, datatype, binary=True):
    t = httpclient.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array, binary_data=binary)
    return t


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    texts = np.array(["The cat sits on the mat.", "Grüße", ""], dtype=object)
    pixels = np.arange(128, dtype=np.float32).reshape(2, 64) % 17
    seeds = {
        # The client's defaults: binary in, no outputs named (binary_data_output).
        "binary_texts": body([tensor("text", texts, "BYTES")]),
        "binary_pixels": body(
            [tensor("pixels", pixels, "FP32")],
            [httpclient.InferRequestedOutput(n) for n in ("probabilities", "label", "class")],
            request_id="seed-1",
        ),
        "binary_column": body([tensor("text", texts.reshape(3, 1), "BYTES")]),
        "binary_mixed": body([
            tensor("i64", np.array([[1, -2], [3, 2**40]], dtype=np.int64), "INT64"),
            tensor("i32", np.array([7, -7], dtype=np.int32), "INT32"),
            tensor("f64", np.array([0.5, -1e300], dtype=np.float64), "FP64"),
            tensor("f16", np.array([1.5, -0.0, 65504], dtype=np.float16), "FP16"),
            tensor("flags", np.array([True, False, True]), "BOOL"),
            tensor("u8", np.array([0, 255], dtype=np.uint8), "UINT8"),
            tensor("json", np.array([1.0, 2.0], dtype=np.float32), "FP32", binary=False),
        ], [httpclient.InferRequestedOutput("out", binary_data=False)]),
        "json_texts": body([tensor("text", texts, "BYTES", binary=False)],
                           [httpclient.InferRequestedOutput("embedding", binary_data=False)]),
        "json_pixels": body([tensor("pixels", pixels[:1], "FP32", binary=False)]),
    }
    for name, (request, json_size) in seeds.items():
        (OUT / f"{name}.bin").write_bytes(framed(request, json_size))
    # The other header choices: the whole body's length, and header text before a newline.
    request, _ = seeds["json_pixels"]
    (OUT / "header_whole.bin").write_bytes(b"\x03" + request)
    request, json_size = seeds["binary_texts"]
    (OUT / "header_text.bin").write_bytes(b"\x02" + str(json_size).encode() + b"\n" + request)
    # Nested JSON data, as KServe clients send it.
    nested = b'{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT64","data":[[1,2],[3,4]]}]}'
    (OUT / "json_nested.bin").write_bytes(b"\x00" + nested)
    for p in sorted(OUT.iterdir()):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    main()
