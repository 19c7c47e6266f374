#!/usr/bin/env python3
"""Writes the weight-format fixtures of tests/formats.rs into tests/fixtures/formats/.

    python3 -m pip install numpy gguf onnx    # no torch, no safetensors package
    python3 scripts/make-fixtures.py

One small model, the same tensors in every format:

    layers.0.weight  f32 [3, 4]
    layers.0.bias    f32 [3]
    embed.weight     f16 [5, 2]
    head.weight      f32 [2, 3]   (in the PyTorch file: a transposed view, Fortran order)
    head.bias        f32 [2]      (in the PyTorch file: a view at offset 6 of a shared storage)

mlp.onnx holds the same tensors as initializers of a small graph,
y = softmax(relu(x @ layers.0.weight.T + layers.0.bias) @ head.weight.T + head.bias), and
unsupported.onnx a graph with an operator candle-onnx does not run (Einsum).

model.safetensors is the reference the tests compare every other file with. The PyTorch
checkpoints are written the way torch.save writes them (a zip of archive/data.pkl, pickle
protocol 2, with torch._utils._rebuild_tensor_v2 and persistent ids for the storages, and
archive/data/<key> raw little-endian storages) through stand-in `torch` modules, so torch is
not needed. The malicious files are pickles whose __reduce__ calls os.system: they are never
unpickled here or in the tests (the tests prove the loader refuses them and that the marker
file they would create never appears).
"""

import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "formats")
MARKER = "/tmp/modelhost-pickle-marker"

rng = np.random.default_rng(7)
TENSORS = {
    "layers.0.weight": rng.standard_normal((3, 4)).astype(np.float32),
    "layers.0.bias": rng.standard_normal(3).astype(np.float32),
    "embed.weight": rng.standard_normal((5, 2)).astype(np.float16),
    "head.weight": rng.standard_normal((2, 3)).astype(np.float32),
    "head.bias": rng.standard_normal(2).astype(np.float32),
}


def write_safetensors(path, tensors):
    dtypes = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        data = np.ascontiguousarray(t).tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# --- stand-ins for the torch names a checkpoint's pickle refers to -------------------------
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called: the fixture is only written")


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class FloatStorage:
    pass


class HalfStorage:
    pass


for cls in (FloatStorage, HalfStorage):
    cls.__module__ = "torch"
    setattr(torch, cls.__name__, cls)
torch._utils = torch_utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


class Storage:
    def __init__(self, key, cls, values):
        self.key, self.cls, self.values = key, cls, values


class Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce__(self):
        args = (self.storage, self.offset, tuple(self.shape), tuple(self.stride), False, collections.OrderedDict())
        return (_rebuild_tensor_v2, args)


class CheckpointPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.values.size)
        return None


def write_torch_zip(path, state_dict, storages, pickled=None):
    buf = io.BytesIO()
    if pickled is None:
        CheckpointPickler(buf, protocol=2).dump(state_dict)
        pickled = buf.getvalue()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.values.astype(s.values.dtype.newbyteorder("<")).tobytes())
        z.writestr("archive/version", "3\n")


def torch_state_dict():
    t = TENSORS
    storages = []

    def contiguous(key, array, cls):
        s = Storage(key, cls, array.reshape(-1))
        storages.append(s)
        shape = list(array.shape)
        stride = [int(np.prod(shape[i + 1:])) for i in range(len(shape))]
        return Tensor(s, 0, shape, stride)

    sd = collections.OrderedDict()
    sd["layers.0.weight"] = contiguous("0", t["layers.0.weight"], FloatStorage)
    sd["layers.0.bias"] = contiguous("1", t["layers.0.bias"], FloatStorage)
    sd["embed.weight"] = contiguous("2", t["embed.weight"], HalfStorage)
    # head.weight [2, 3] stored as its transpose [3, 2] row-major: strides (1, 2), and
    # head.bias at offset 6 of the same storage.
    shared = np.concatenate([t["head.weight"].T.reshape(-1), t["head.bias"]])
    s = Storage("3", FloatStorage, shared)
    storages.append(s)
    sd["head.weight"] = Tensor(s, 0, [2, 3], [1, 2])
    sd["head.bias"] = Tensor(s, 6, [2], [1])
    return sd, storages


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def main():
    os.makedirs(OUT, exist_ok=True)
    write_safetensors(os.path.join(OUT, "model.safetensors"), TENSORS)

    sd, storages = torch_state_dict()
    write_torch_zip(os.path.join(OUT, "pytorch_model.bin"), sd, storages)

    np.savez(os.path.join(OUT, "model.npz"), **TENSORS)
    np.save(os.path.join(OUT, "embed.npy"), TENSORS["embed.weight"])

    import gguf

    w = gguf.GGUFWriter(os.path.join(OUT, "model.gguf"), "modelhost-fixture")
    for name, array in TENSORS.items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(a, name) for name, a in TENSORS.items()]
    nodes = [
        helper.make_node("Gemm", ["x", "layers.0.weight", "layers.0.bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "head.weight", "head.bias"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, "mlp.onnx"))
    einsum = helper.make_graph(
        [helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->i")], "einsum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
    )
    onnx.save(helper.make_model(einsum, opset_imports=[helper.make_opsetid("", 13)]), os.path.join(OUT, "unsupported.onnx"))

    # The malicious checkpoint: torch's zip layout, a state dict holding an object whose
    # __reduce__ runs os.system (protocol 2: GLOBAL posix system + REDUCE).
    evil = collections.OrderedDict(weight=Evil())
    write_torch_zip(os.path.join(OUT, "malicious.pth"), evil, [], pickle.dumps(evil, protocol=2))
    # A bare pickle, protocol 4: the names come through STACK_GLOBAL and the memo.
    with open(os.path.join(OUT, "malicious-proto4.pt"), "wb") as f:
        f.write(pickle.dumps({"weight": Evil()}, protocol=4))
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
