#!/usr/bin/env python3
"""Writes the weight-format fixtures in tests/fixtures/formats/ (a few KB, committed).

    pip install numpy safetensors gguf onnx
    python3 scripts/make-fixtures.py
    # and, after scripts/fetch-models.sh, the Silero VAD reference outputs:
    pip install onnxruntime && python3 scripts/make-fixtures.py --silero

One small model, the same tensors in every format, so tests/formats.rs can check that each
format loads exactly what safetensors loads:

  model.safetensors   the reference: every tensor below
  model.pth           PyTorch zip checkpoint (torch.save layout), written without torch:
                      shared storages (layers.0.weight, tied.weight and the row view
                      layers.0.row2 share one storage; layers.1.weight_t is a strided,
                      non-contiguous view of layers.1.weight's storage), an nn.Parameter
                      (_rebuild_parameter), f16 and i64 storages
  model.npz           np.savez (layers.1.weight_t is Fortran-ordered)
  compressed.npz      np.savez_compressed, which is refused with a typed error
  model.gguf          GGUF v3, the f32 and f16 tensors (GGUF has no i64 tensors in candle)
  model.onnx          the MLP as a graph: Gemm(transB) -> Relu -> Transpose/MatMul -> Add
                      -> Softmax, with layers.{0,1}.{weight,bias} as initializers
  unsupported-op.onnx a graph with an Einsum node (candle-onnx has no Einsum)
  model-p4.pth        the same checkpoint pickled with protocol 4 (STACK_GLOBAL, FRAME,
                      MEMOIZE), `ids` rebuilt through _rebuild_from_type_v2
  malicious.pth       a zip checkpoint whose data.pkl calls os.system (pickled as
                      `posix system`, protocol 2 GLOBAL) to touch ./modelhost-pwned-marker
  malicious-p4.pkl    the same as a bare protocol-4 pickle (STACK_GLOBAL)

PyTorch is not needed: the checkpoint is pickled against stand-in `torch` modules whose
objects carry the module and qualified names real torch pickles, and the zip is laid out
as torch.save lays it out (archive/data.pkl, archive/data/<key>, archive/byteorder,
archive/version). The malicious fixtures are checked here, and only here, by letting
Python unpickle them in a scratch directory: the marker must appear.
"""

import collections
import os
import pickle
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "formats"

rng = np.random.default_rng(7)
w0 = rng.standard_normal((8, 4)).astype(np.float32)
b0 = rng.standard_normal(8).astype(np.float32)
w1 = rng.standard_normal((3, 8)).astype(np.float32)
b1 = rng.standard_normal(3).astype(np.float32)
emb = rng.standard_normal((5, 2)).astype(np.float16)
ids = (np.arange(6, dtype=np.int64) * 3 - 4) * 1_000_000_007

TENSORS = collections.OrderedDict(
    [
        ("layers.0.weight", w0),
        ("layers.0.bias", b0),
        ("layers.1.weight", w1),
        ("layers.1.bias", b1),
        ("tied.weight", w0),
        ("layers.0.row2", w0[2]),
        ("layers.1.weight_t", w1.T),
        ("embed.half", emb),
        ("ids", ids),
    ]
)


def write_safetensors():
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in TENSORS.items()}, OUT / "model.safetensors")


def write_npz():
    with open(OUT / "model.npz", "wb") as f:
        np.savez(f, **TENSORS)
    with open(OUT / "compressed.npz", "wb") as f:
        np.savez_compressed(f, w=w0)


def write_gguf():
    import gguf

    w = gguf.GGUFWriter(str(OUT / "model.gguf"), arch="modelhost-fixture")
    for k, v in TENSORS.items():
        if v.dtype in (np.float32, np.float16):
            w.add_tensor(k, np.ascontiguousarray(v))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --- PyTorch checkpoints without torch ---------------------------------------------------


def fake_torch():
    """Stand-in modules so pickle writes the globals torch.save writes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def named(obj, module, name):
        obj.__module__, obj.__qualname__, obj.__name__ = module, name, name
        setattr(sys.modules[module], name, obj)
        return obj

    tensor_mod = types.ModuleType("torch._tensor")
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    sys.modules["torch._tensor"] = tensor_mod
    torch._utils, torch._tensor = utils, tensor_mod
    storages = {
        np.float32: named(type("FloatStorage", (), {}), "torch", "FloatStorage"),
        np.float16: named(type("HalfStorage", (), {}), "torch", "HalfStorage"),
        np.int64: named(type("LongStorage", (), {}), "torch", "LongStorage"),
    }
    rebuild = named(lambda *a: None, "torch._utils", "_rebuild_tensor_v2")
    parameter = named(lambda *a: None, "torch._utils", "_rebuild_parameter")
    # Tensor subclasses are pickled through _rebuild_from_type_v2(func, type, args, state).
    from_type = named(lambda *a: None, "torch._tensor", "_rebuild_from_type_v2")
    named(type("Tensor", (), {}), "torch", "Tensor")
    return storages, rebuild, parameter, from_type


class Storage:
    def __init__(self, key, cls, array):
        self.key, self.cls, self.array = key, cls, np.ascontiguousarray(array).reshape(-1)


class TensorView:
    """A tensor as torch pickles it: a view (offset, size, stride) of a storage."""

    def __init__(self, rebuild, storage, offset, size, stride, parameter=None, from_type=None):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())
        self.rebuild, self.parameter, self.from_type = rebuild, parameter, from_type

    def __reduce__(self):
        if self.from_type is not None:
            return (self.from_type, (self.rebuild, sys.modules["torch"].Tensor, self.args, {}))
        if self.parameter is not None:
            inner = TensorView(self.rebuild, *self.args[:4])
            return (self.parameter, (inner, False, collections.OrderedDict()))
        return (self.rebuild, self.args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.array.size)
        return None


def write_torch_zip(path, pkl_bytes, storages=()):
    def entry(name):  # a fixed timestamp keeps the fixtures byte-for-byte reproducible
        return zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(entry("archive/data.pkl"), pkl_bytes)
        z.writestr(entry("archive/byteorder"), "little")
        for s in storages:
            z.writestr(entry(f"archive/data/{s.key}"), s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
        z.writestr(entry("archive/version"), "3\n")


def write_pth(name="model.pth", protocol=2):
    storages, rebuild, parameter, from_type = fake_torch()
    # The protocol-4 variant (torch.save(..., pickle_protocol=4): STACK_GLOBAL, FRAME,
    # MEMOIZE) also rebuilds one tensor through _rebuild_from_type_v2.
    sub = from_type if protocol >= 4 else None
    s0 = Storage("0", storages[np.float32], w0)
    s1 = Storage("1", storages[np.float32], b0)
    s2 = Storage("2", storages[np.float32], w1)
    s3 = Storage("3", storages[np.float32], b1)
    s4 = Storage("4", storages[np.float16], emb)
    s5 = Storage("5", storages[np.int64], ids)
    sd = collections.OrderedDict(
        [
            ("layers.0.weight", TensorView(rebuild, s0, 0, (8, 4), (4, 1))),
            ("layers.0.bias", TensorView(rebuild, s1, 0, (8,), (1,), parameter=parameter)),
            ("layers.1.weight", TensorView(rebuild, s2, 0, (3, 8), (8, 1))),
            ("layers.1.bias", TensorView(rebuild, s3, 0, (3,), (1,))),
            ("tied.weight", TensorView(rebuild, s0, 0, (8, 4), (4, 1))),
            ("layers.0.row2", TensorView(rebuild, s0, 8, (4,), (1,))),
            ("layers.1.weight_t", TensorView(rebuild, s2, 0, (8, 3), (1, 8))),
            ("embed.half", TensorView(rebuild, s4, 0, (5, 2), (2, 1))),
            ("ids", TensorView(rebuild, s5, 0, (6,), (1,), from_type=sub)),
        ]
    )
    import io

    buf = io.BytesIO()
    TorchPickler(buf, protocol=protocol).dump(sd)
    write_torch_zip(OUT / name, buf.getvalue(), [s0, s1, s2, s3, s4, s5])


class Pwn:
    def __reduce__(self):
        return (os.system, ("touch modelhost-pwned-marker",))


def write_malicious():
    write_torch_zip(OUT / "malicious.pth", pickle.dumps(Pwn(), protocol=2))
    (OUT / "malicious-p4.pkl").write_bytes(pickle.dumps(Pwn(), protocol=4))
    # Sanity check, here only: Python's own unpickler really would run the command.
    for data in (
        zipfile.ZipFile(OUT / "malicious.pth").read("archive/data.pkl"),
        (OUT / "malicious-p4.pkl").read_bytes(),
    ):
        with tempfile.TemporaryDirectory() as d:
            cwd = os.getcwd()
            os.chdir(d)
            try:
                pickle.loads(data)
                assert os.path.exists("modelhost-pwned-marker"), "the malicious pickle is not malicious"
            finally:
                os.chdir(cwd)


# --- ONNX ----------------------------------------------------------------------------


def write_onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(TENSORS[k], k) for k in ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias")]
    nodes = [
        helper.make_node("Gemm", ["x", "layers.0.weight", "layers.0.bias"], ["h0"], name="dense0", transB=1),
        helper.make_node("Relu", ["h0"], ["h1"], name="relu"),
        helper.make_node("Transpose", ["layers.1.weight"], ["w1t"], name="w1_t", perm=[1, 0]),
        helper.make_node("MatMul", ["h1", "w1t"], ["h2"], name="dense1"),
        helper.make_node("Add", ["h2", "layers.1.bias"], ["logits"], name="bias1"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="modelhost-fixtures")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, OUT / "model.onnx")

    einsum = helper.make_graph(
        [helper.make_node("Einsum", ["a", "b"], ["c"], name="contract", equation="ij,jk->ik")],
        "einsum",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 2]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 2])],
    )
    model = helper.make_model(einsum, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, OUT / "unsupported-op.onnx")


def write_silero_reference():
    """tests/data/silero-vad-reference.json: ONNX Runtime's outputs of Silero VAD
    (models/silero-vad/silero_vad.onnx) on three chunks of a synthetic signal, the state
    carried from chunk to chunk, for the candle-onnx parity test."""
    import json

    import onnxruntime as ort

    session = ort.InferenceSession(str(ROOT / "models/silero-vad/silero_vad.onnx"))
    t = np.arange(3 * 512) / 16000.0
    rng = np.random.default_rng(11)
    # A voiced-like signal: harmonics of a gliding 140-220 Hz pitch, amplitude-modulated, with noise.
    pitch = 140 + 80 * t / t[-1]
    phase = 2 * np.pi * np.cumsum(pitch) / 16000.0
    voice = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    signal = (0.3 * voice + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    state = np.zeros((2, 1, 128), np.float32)
    chunks = []
    for i in range(3):
        x = signal[i * 512 : (i + 1) * 512][None]
        prob, state = session.run(None, {"input": x, "state": state, "sr": np.array(16000, np.int64)})
        chunks.append({"input": x[0].tolist(), "prob": float(prob.ravel()[0]), "state": state.ravel().tolist()})
    path = ROOT / "tests/data/silero-vad-reference.json"
    path.write_text(json.dumps({"sample_rate": 16000, "chunks": chunks}) + "\n")
    print(f"{path.stat().st_size:7d}  {path.relative_to(ROOT)}  probs {[round(c['prob'], 4) for c in chunks]}")


def main():
    if sys.argv[1:] == ["--silero"]:
        write_silero_reference()
        return
    OUT.mkdir(parents=True, exist_ok=True)
    write_safetensors()
    write_npz()
    write_gguf()
    write_pth()
    write_pth("model-p4.pth", protocol=4)
    write_malicious()
    write_onnx()
    for p in sorted(OUT.iterdir()):
        print(f"{p.stat().st_size:7d}  {p.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
