#!/usr/bin/env python3
"""Writes the hostile model directories of scripts/hostile-arch.sh into OUT, one per case,
from the small fixtures of tests/fixtures/arch (and the real all-mpnet-base-v2 when
present), and an index OUT/index.tsv: name, kind, directory, arguments, expected
(ok | refused | any), what the case attacks.

Pure Python (json + struct): safetensors files are rewritten by hand.
"""
import json
import os
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests/fixtures/arch")
MPNET = os.path.join(ROOT, "models/all-mpnet-base-v2")
if not os.path.isdir(MPNET):
    MPNET = "/work/main/models/all-mpnet-base-v2"
OUT = sys.argv[1]
rows = []


def read_st(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    body = data[8 + n :]
    tensors = {}
    for k, v in header.items():
        a, b = v["data_offsets"]
        tensors[k] = [v["dtype"], v["shape"], body[a:b]]
    return tensors, meta


def write_st(path, tensors, meta=None):
    header, body, off = {}, bytearray(), 0
    if meta:
        header["__metadata__"] = meta
    for k, (dtype, shape, raw) in tensors.items():
        header[k] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        body += raw
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + bytes(body))


def f32_rows(tensor, rows_wanted):
    """The tensor with its first dimension cut or extended (repeating row 0) to rows_wanted."""
    dtype, shape, raw = tensor
    row = 4 * (1 if len(shape) == 1 else shape[1])
    if rows_wanted <= shape[0]:
        raw = raw[: rows_wanted * row]
    else:
        raw = raw + raw[:row] * (rows_wanted - shape[0])
    return [dtype, [rows_wanted] + shape[1:], raw]


def case(name, kind, src, args="input=basic", expect="refused", attack="", config=None, tok_config=None,
         weights=None, tokenizer=None, files=None):
    d = os.path.join(OUT, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    for entry in os.listdir(src):
        s = os.path.join(src, entry)
        if entry == "model.safetensors" and weights is None:
            os.symlink(s, os.path.join(d, entry))
        elif os.path.isdir(s):
            shutil.copytree(s, os.path.join(d, entry))
        elif entry == "model.safetensors":
            pass
        elif os.path.getsize(s) > 50_000_000:
            os.symlink(s, os.path.join(d, entry))
        else:
            shutil.copy(s, os.path.join(d, entry))
    if config is not None:
        path = os.path.join(d, "config.json")
        c = json.load(open(path))
        out = config(c)
        if isinstance(out, str):
            open(path, "w").write(out)
        else:
            json.dump(c if out is None else out, open(path, "w"))
    if tok_config is not None:
        path = os.path.join(d, "tokenizer_config.json")
        c = json.load(open(path)) if os.path.exists(path) else {}
        out = tok_config(c)
        if isinstance(out, str):
            open(path, "w").write(out)
        else:
            json.dump(c if out is None else out, open(path, "w"))
    if tokenizer is not None:
        path = os.path.join(d, "tokenizer.json")
        t = json.load(open(path))
        tokenizer(t)
        json.dump(t, open(path, "w"))
    if weights is not None:
        t, meta = read_st(os.path.join(src, "model.safetensors"))
        weights(t)
        write_st(os.path.join(d, "model.safetensors"), t, meta)
    for fname, text in (files or {}).items():
        open(os.path.join(d, fname), "w").write(text)
    rows.append((name, kind, d, args, expect, attack))


def setter(**kv):
    def f(c):
        for k, v in kv.items():
            if v is DELETE:
                c.pop(k, None)
            else:
                c[k] = v
    return f


DELETE = object()


def raw_config(key, literal):
    """config.json with `key`'s value replaced by a JSON literal written verbatim."""
    def f(c):
        c[key] = "@@"
        return json.dumps(c).replace('"@@"', literal)
    return f


FAM = ["roberta", "xlm-roberta", "distilbert", "mpnet"]
fx = lambda fam, kind: os.path.join(FIX, fam, kind)
PREFIX = {"roberta": "roberta", "xlm-roberta": "roberta", "distilbert": "distilbert", "mpnet": "mpnet"}

# --- baselines: every family, kind, engine, precision -------------------------------
for fam in FAM:
    for kind in ["embed", "classify", "rerank"]:
        for eng in ["packed", "portable", "padded"]:
            case(f"base-{fam}-{kind}-{eng}", kind, fx(fam, kind), f"engine={eng}", "ok",
                 "valid fixture")
        for prec in ["bf16", "int8"]:
            case(f"base-{fam}-{kind}-{prec}", kind, fx(fam, kind), f"precision={prec} input=long", "ok",
                 "reduced precision, long text")

# --- config numbers ------------------------------------------------------------------
for fam in ["roberta", "mpnet", "distilbert"]:
    mp = "max_position_embeddings"
    case(f"maxpos-huge-{fam}", "classify", fx(fam, "classify"), expect="refused",
         config=setter(**{mp: 10**18}), attack="max_position_embeddings 1e18")
    case(f"maxpos-u64max-{fam}", "classify", fx(fam, "classify"),
         config=setter(**{mp: 2**64 - 1}), attack="max_position_embeddings u64::MAX")
    case(f"maxpos-zero-{fam}", "classify", fx(fam, "classify"),
         config=setter(**{mp: 0}), attack="max_position_embeddings 0")
    case(f"maxpos-neg-{fam}", "classify", fx(fam, "classify"),
         config=setter(**{mp: -1}), attack="max_position_embeddings -1")
    case(f"maxpos-float-{fam}", "classify", fx(fam, "classify"),
         config=setter(**{mp: 66.5}), attack="max_position_embeddings 66.5")
    case(f"maxpos-nanstr-{fam}", "classify", fx(fam, "classify"),
         config=setter(**{mp: "NaN"}), attack="max_position_embeddings \"NaN\"")
    for eng in ["packed", "padded"]:
        case(f"layers-zero-{fam}-{eng}", "embed", fx(fam, "embed"), f"engine={eng}", "any",
             config=setter(num_hidden_layers=0, n_layers=0) if fam == "distilbert" else setter(num_hidden_layers=0),
             attack="0 layers (embeddings only)")
    case(f"heads-zero-{fam}", "classify", fx(fam, "classify"),
         config=setter(n_heads=0) if fam == "distilbert" else setter(num_attention_heads=0),
         attack="num_attention_heads 0")
    case(f"heads-nodiv-{fam}", "classify", fx(fam, "classify"),
         config=setter(n_heads=3) if fam == "distilbert" else setter(num_attention_heads=3),
         attack="heads 3 not dividing hidden 32")
    case(f"heads-equal-hidden-{fam}", "classify", fx(fam, "classify"), expect="any",
         config=setter(n_heads=32) if fam == "distilbert" else setter(num_attention_heads=32),
         attack="heads 32 = hidden (head dim 1)")
    case(f"vocab-zero-{fam}", "classify", fx(fam, "classify"),
         config=setter(vocab_size=0), attack="vocab_size 0")
    case(f"eps-negative-{fam}", "embed", fx(fam, "embed"), expect="any",
         config=setter(layer_norm_eps=-1.0) if fam != "distilbert" else None,
         attack="layer_norm_eps -1 (sqrt of negative variance)")
    case(f"eps-huge-{fam}", "embed", fx(fam, "embed"), expect="any",
         config=setter(layer_norm_eps=1e300), attack="layer_norm_eps 1e300 (inf as f32)")
    case(f"eps-nanstr-{fam}", "embed", fx(fam, "embed"),
         config=setter(layer_norm_eps="NaN"), attack="layer_norm_eps \"NaN\"")
    case(f"eps-overflow-{fam}", "embed", fx(fam, "embed"),
         config=raw_config("layer_norm_eps", "1e400"), attack="layer_norm_eps 1e400 literal")
    case(f"modeltype-int-{fam}", "classify", fx(fam, "classify"),
         config=setter(model_type=5), attack="model_type 5")

case("distilbert-dim-and-hidden", "classify", fx("distilbert", "classify"), expect="any",
     config=setter(hidden_size=32), attack="dim and hidden_size both present")
case("distilbert-dim-and-hidden-differ", "classify", fx("distilbert", "classify"), expect="refused",
     config=setter(hidden_size=64), attack="dim 32 and hidden_size 64 both present")
case("distilbert-layers-aliases", "classify", fx("distilbert", "classify"), expect="any",
     config=setter(num_hidden_layers=6), attack="n_layers 2 and num_hidden_layers 6")
# DistilBERT config says sinusoidal_pos_embds (unsupported?) / no activation
case("distilbert-sinusoidal", "classify", fx("distilbert", "classify"), expect="any",
     config=setter(sinusoidal_pos_embds=True), attack="sinusoidal_pos_embds true (transformers ignores stored table)")

for name, mt in [("XLM-RoBERTa", "XLM-RoBERTa"), ("empty", ""), ("null", None), ("xlm_roberta", "xlm_roberta"),
                 ("camembert", "camembert")]:
    case(f"modeltype-{name}", "classify", fx("roberta", "classify"), expect="refused",
         config=setter(model_type=mt), attack=f"model_type {mt!r}")
case("modeltype-null-embed-roberta", "embed", fx("roberta", "embed"), expect="any",
     config=setter(model_type=None), attack="model_type null on a bare RoBERTa checkpoint: read as BERT")
case("modeltype-missing-embed-mpnet", "embed", fx("mpnet", "embed"), expect="any",
     config=setter(model_type=DELETE), attack="no model_type on a bare MPNet checkpoint: read as BERT")

# RoBERTa padding index
for pad, expect in [(0, "any"), (60, "any"), (63, "any"), (64, "refused"), (65, "refused"), (66, "refused"),
                    (599, "refused"), (600, "refused"), (2**32, "refused"), (2**64 - 2, "refused"),
                    (2**64 - 1, "refused")]:
    for kind in ["classify", "rerank"]:
        case(f"pad-{pad}-roberta-{kind}", kind, fx("roberta", kind), "engine=padded", expect,
             config=setter(pad_token_id=pad), attack=f"pad_token_id {pad}")
case("pad-u64max-roberta-packed", "classify", fx("roberta", "classify"), "engine=packed", "refused",
     config=setter(pad_token_id=2**64 - 1), attack="pad_token_id u64::MAX, packed")
case("pad-neg-roberta", "classify", fx("roberta", "classify"), config=setter(pad_token_id=-1),
     attack="pad_token_id -1")
case("pad-null-roberta", "classify", fx("roberta", "classify"), expect="any",
     config=setter(pad_token_id=None), attack="pad_token_id null")
case("pad-huge-mpnet", "classify", fx("mpnet", "classify"), "engine=padded", "any",
     config=setter(pad_token_id=2**64 - 1), attack="MPNet ignores pad_token_id (padding idx fixed 1); pad id past vocab in padded engine")

# MPNet buckets
for b, expect in [(0, "refused"), (31, "refused"), (64, "refused"), (10**18, "refused"), (-1, "refused")]:
    case(f"buckets-{b}-mpnet", "classify", fx("mpnet", "classify"), expect=expect,
         config=setter(relative_attention_num_buckets=b), attack=f"relative_attention_num_buckets {b}")
case("buckets-64-table64-mpnet", "classify", fx("mpnet", "classify"), expect="any",
     config=setter(relative_attention_num_buckets=64),
     weights=lambda t: t.__setitem__("mpnet.encoder.relative_attention_bias.weight",
                                     f32_rows(t["mpnet.encoder.relative_attention_bias.weight"], 64)),
     attack="64 buckets in config and table (transformers uses 32)")
case("type-vocab-zero-roberta", "classify", fx("roberta", "classify"),
     config=setter(type_vocab_size=0), attack="type_vocab_size 0")
case("type-vocab-huge-roberta", "classify", fx("roberta", "classify"),
     config=setter(type_vocab_size=10**18), attack="type_vocab_size 1e18")

# Small position tables that match the config
for fam, n, kind, expect in [("roberta", 3, "classify", "refused"), ("roberta", 4, "classify", "any"),
                             ("roberta", 4, "rerank", "refused"), ("roberta", 7, "rerank", "any"),
                             ("mpnet", 4, "classify", "any"), ("mpnet", 1, "classify", "refused"),
                             ("distilbert", 2, "classify", "any"), ("distilbert", 1, "classify", "refused")]:
    key = f"{PREFIX[fam]}.embeddings.position_embeddings.weight"
    for inp in ["basic", "big"]:
        case(f"smalltable-{n}-{fam}-{kind}-{inp}", kind, fx(fam, kind), f"input={inp} engine=padded", expect,
             config=setter(max_position_embeddings=n),
             weights=lambda t, key=key, n=n: t.__setitem__(key, f32_rows(t[key], n)),
             attack=f"position table of {n} rows")

# --- weights ---------------------------------------------------------------------------
for fam in FAM:
    p = PREFIX[fam]
    out = "classifier" if fam == "distilbert" else "classifier.out_proj"
    dense = "pre_classifier" if fam == "distilbert" else "classifier.dense"

    def drop(*names):
        return lambda t: [t.pop(n) for n in names]

    case(f"no-outproj-{fam}", "classify", fx(fam, "classify"),
         weights=drop(f"{out}.weight", f"{out}.bias"), attack="output layer missing")
    case(f"no-dense-{fam}", "classify", fx(fam, "classify"),
         weights=drop(f"{dense}.weight", f"{dense}.bias"), attack="head's dense layer missing")
    case(f"outproj-0rows-{fam}", "classify", fx(fam, "classify"),
         weights=lambda t, out=out: [t.__setitem__(f"{out}.weight", ["F32", [0, 32], b""]),
                                     t.__setitem__(f"{out}.bias", ["F32", [0], b""])],
         attack="out_proj 0 rows")
    case(f"outproj-1e6rows-{fam}", "classify", fx(fam, "classify"), expect="any",
         config=setter(num_labels=10**6, id2label=DELETE, label2id=DELETE),
         weights=lambda t, out=out: [t.__setitem__(f"{out}.weight", f32_rows(t[f"{out}.weight"], 10**6)),
                                     t.__setitem__(f"{out}.bias", f32_rows(t[f"{out}.bias"], 10**6))],
         attack="out_proj 10^6 rows, num_labels 10^6")
    case(f"outproj-1e6rows-3labels-{fam}", "classify", fx(fam, "classify"), expect="any",
         weights=lambda t, out=out: [t.__setitem__(f"{out}.weight", f32_rows(t[f"{out}.weight"], 10**6)),
                                     t.__setitem__(f"{out}.bias", f32_rows(t[f"{out}.bias"], 10**6))],
         attack="out_proj 10^6 rows, config 3 labels")
    case(f"id2label-huge-{fam}", "classify", fx(fam, "classify"),
         config=setter(id2label={str(i): "x" for i in range(500_000)}, label2id=DELETE),
         attack="id2label 500k entries")
    case(f"id2label-bigkey-{fam}", "classify", fx(fam, "classify"),
         config=setter(id2label={"0": "a", "1": "b", "99999999999999999999": "c"}, label2id=DELETE),
         attack="id2label key past usize")
    case(f"numlabels-u64-{fam}", "classify", fx(fam, "classify"),
         config=setter(num_labels=2**64 - 1), attack="num_labels u64::MAX")
    pos = f"{p}.embeddings.position_embeddings.weight"
    case(f"postable-short-{fam}", "classify", fx(fam, "classify"),
         weights=lambda t, pos=pos: t.__setitem__(pos, f32_rows(t[pos], 10)), attack="position table shorter than config")
    case(f"postable-rank1-{fam}", "classify", fx(fam, "classify"),
         weights=lambda t, pos=pos: t.__setitem__(pos, ["F32", [len(t[pos][2]) // 4], t[pos][2]]),
         attack="position table rank 1")
    word = f"{p}.embeddings.word_embeddings.weight"
    case(f"word-i64-{fam}", "classify", fx(fam, "classify"), expect="any",
         weights=lambda t, word=word: t.__setitem__(word, ["I64", [t[word][1][0], t[word][1][1] // 2], t[word][2]]),
         attack="word embeddings stored as I64 with halved columns")
    case(f"word-f16-{fam}", "classify", fx(fam, "classify"), expect="any",
         weights=lambda t, word=word: t.__setitem__(word, ["F16", [t[word][1][0], t[word][1][1] * 2], t[word][2]]),
         attack="word embeddings as F16 with doubled columns")
    case(f"outproj-wrongcols-{fam}", "classify", fx(fam, "classify"),
         weights=lambda t, out=out: t.__setitem__(f"{out}.weight", ["F32", [3, 16], t[f"{out}.weight"][2][: 3 * 16 * 4]]),
         attack="out_proj [3,16] on hidden 32")
    case(f"outproj-1d-{fam}", "classify", fx(fam, "classify"),
         weights=lambda t, out=out: t.__setitem__(f"{out}.weight", ["F32", [96], t[f"{out}.weight"][2]]),
         attack="out_proj weight rank 1")
    case(f"outproj-scalar-{fam}", "classify", fx(fam, "classify"),
         weights=lambda t, out=out: t.__setitem__(f"{out}.weight", ["F32", [], t[f"{out}.weight"][2][:4]]),
         attack="out_proj weight rank 0")

case("mpnet-no-relbias", "classify", fx("mpnet", "classify"),
     weights=lambda t: t.pop("mpnet.encoder.relative_attention_bias.weight"), attack="relative bias table missing")
case("mpnet-relbias-transposed", "classify", fx("mpnet", "classify"),
     weights=lambda t: t.__setitem__("mpnet.encoder.relative_attention_bias.weight",
                                     ["F32", [4, 32], t["mpnet.encoder.relative_attention_bias.weight"][2]]),
     attack="relative bias [heads, buckets]")
case("roberta-no-tokentype", "classify", fx("roberta", "classify"),
     weights=lambda t: t.pop("roberta.embeddings.token_type_embeddings.weight"), attack="token type table missing")
case("roberta-two-prefixes", "classify", fx("roberta", "classify"), expect="any",
     weights=lambda t: t.update({k[len("roberta."):]: v for k, v in list(t.items()) if k.startswith("roberta.")}),
     attack="encoder both at root and under roberta.")

# --- tokenizers ----------------------------------------------------------------------------
def add_token(content, id_):
    def f(t):
        t["added_tokens"].append({"id": id_, "content": content, "single_word": False, "lstrip": False,
                                  "rstrip": False, "normalized": False, "special": True})
    return f


for fam in FAM:
    case(f"tok-id-past-vocab-{fam}", "classify", fx(fam, "classify"), "input=basic", "any",
         tokenizer=add_token("quick", 10**6), attack="tokenizer id 10^6 (vocab 600) for 'quick'")
    case(f"tok-id-u32max-{fam}", "classify", fx(fam, "classify"), "input=basic", "any",
         tokenizer=add_token("quick", 2**32 - 1), attack="tokenizer id u32::MAX for 'quick'")


def pair_types(t):
    pp = t.get("post_processor") or {}
    if pp.get("type") == "TemplateProcessing":
        for item in pp["pair"]:
            for v in item.values():
                v["type_id"] = 7
    elif pp.get("type") in ("RobertaProcessing", "BertProcessing"):
        t["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 9}},
                     {"SpecialToken": {"id": "</s>", "type_id": 9}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                               "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}


for fam in FAM:
    case(f"tok-pair-types-{fam}", "rerank", fx(fam, "rerank"), "engine=padded", "any",
         tokenizer=pair_types, attack="pair processor type ids 7/9 on a model with <=1 type")
    case(f"tok-post-huge-{fam}", "rerank", fx(fam, "rerank"), "input=big", "any",
         tokenizer=lambda t: t.__setitem__("post_processor", {
             "type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "X", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "X", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"Sequence": {"id": "B", "type_id": 0}}],
             "special_tokens": {"X": {"id": "X", "ids": [0] * 200, "tokens": ["<s>"] * 200}}}),
         attack="post processor adds 200 tokens (more than max_len)")

# tokenizer_config.json's model_max_length
for label, value, expect in [("0", "0", "any"), ("1", "1", "refused"), ("2", "2", "any"), ("1e30", "1e30", "any"),
                             ("neg", "-5", "any"), ("huge", "1e308", "any"), ("overflow", "1e400", "any"),
                             ("half", "2.5", "any"), ("string", '"512"', "any"), ("null", "null", "any"),
                             ("u64max", "18446744073709551615", "any"), ("nan-str", '"NaN"', "any")]:
    for kind in ["classify", "rerank"]:
        case(f"mml-{label}-{kind}", kind, fx("roberta", kind), "input=big", expect,
             tok_config=lambda c, value=value: json.dumps(dict(c, model_max_length="@@")).replace('"@@"', value),
             attack=f"model_max_length {value}")
case("mml-tokcfg-not-object", "classify", fx("roberta", "classify"), "input=basic", "any",
     tok_config=lambda c: "[1,2,3]", attack="tokenizer_config.json is an array")
case("mml-tokcfg-garbage", "classify", fx("roberta", "classify"), "input=basic", "any",
     tok_config=lambda c: "\x00\xff not json", attack="tokenizer_config.json not JSON")
case("mml-tokcfg-huge", "classify", fx("roberta", "classify"), "input=basic", "any",
     tok_config=lambda c: json.dumps(dict(c, pad=" " * 200_000_000)), attack="tokenizer_config.json 200 MB")

# --- inputs ----------------------------------------------------------------------------------
for fam in FAM:
    for kind in ["embed", "classify", "rerank"]:
        for inp in ["big", "over", "pads", "special", "unk"]:
            for eng in ["packed", "padded"]:
                exp = "any"
                case(f"in-{inp}-{fam}-{kind}-{eng}", kind, fx(fam, kind), f"input={inp} engine={eng}", exp,
                     attack=f"input {inp}")
        case(f"in-mixed64-{fam}-{kind}-padded", kind, fx(fam, kind), "input=mixed batch=64 engine=padded", "ok",
             attack="64 mixed texts padded")
    for kind in ["classify", "rerank"]:
        case(f"in-maxseq-huge-{fam}-{kind}", kind, fx(fam, kind), f"input=big max_seq={2**64 - 1}", "any",
             attack="max_seq_length u64::MAX")
        case(f"in-maxseq-0-{fam}-{kind}", kind, fx(fam, kind), "input=big max_seq=0", "refused",
             attack="max_seq_length 0")

# --- the real MPNet ----------------------------------------------------------------------------
if os.path.isdir(MPNET):
    for eng in ["packed", "padded"]:
        for b in [1, 16]:
            case(f"real-mpnet-long{b}-{eng}", "embed", MPNET, f"input=long batch={b} engine={eng}", "any",
                 attack=f"all-mpnet-base-v2, {b} texts of 512 tokens")
    # one layer: the memory of one layer of a large padded batch without its time (32 x 512
    # tokens: the padded engine's activations are linear in tokens, ~1.3 GB at 64 x 512
    # with the 440 MB model, past this script's 1.5 GB cap)
    for b in [32]:
        case(f"real-mpnet-1layer-long{b}-padded", "embed", MPNET, f"input=long batch={b} engine=padded", "any",
             config=setter(num_hidden_layers=1), attack=f"all-mpnet-base-v2 (1 layer), {b} x 512 tokens, padded")
        case(f"real-mpnet-1layer-long{b}-packed", "embed", MPNET, f"input=long batch={b} engine=packed", "any",
             config=setter(num_hidden_layers=1), attack=f"all-mpnet-base-v2 (1 layer), {b} x 512 tokens, packed")
    for prec in ["bf16", "int8"]:
        case(f"real-mpnet-{prec}", "embed", MPNET, f"input=long precision={prec}", "ok",
             attack=f"all-mpnet-base-v2 {prec}")
    case("real-mpnet-pads", "embed", MPNET, "input=pads", "any", attack="1 MiB of <pad> on the real MPNet")
    case("real-mpnet-special", "embed", MPNET, "input=special", "any", attack="1 MiB of <s></s> on the real MPNet")

with open(os.path.join(OUT, "index.tsv"), "w") as f:
    for r in rows:
        f.write("\t".join(r) + "\n")
print(len(rows), "cases")
