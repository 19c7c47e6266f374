#!/usr/bin/env python3
"""Writes the sentence-transformers module fixtures in tests/fixtures/st/ (committed, < 2 MB).

Never run in CI: it needs PyTorch. The committed fixtures are what `tests/st_modules.rs`
reads. To rebuild them:

    python3 -m venv /tmp/st && /tmp/st/bin/pip install sentence-transformers   # 6.x + torch
    /tmp/st/bin/pip install --no-deps --target /tmp/st5lib sentence-transformers==5.1.2
    /tmp/st/bin/pip install --target /tmp/st5lib requests pillow
    /tmp/st/bin/python scripts/make-st-fixtures.py --st5 /tmp/st5lib

Each fixture is a small random-weight BERT (hidden 32, 2 layers, 4 heads) with a real
WordPiece tokenizer: all-MiniLM-L6-v2's vocabulary cut down to the 600 pieces that matter
most for the corpus (special tokens, ASCII characters and their `##` forms, the most
frequent pieces), so texts tokenize into many pieces and long ones truncate at
`max_seq_length` 64.

The classic fixtures are built, saved and encoded by sentence-transformers 5.x (the
layout Hub models carry: `sentence_transformers.models.*` module types, `pooling_mode_*`
flags, `sentence_bert_config.json` with `max_seq_length`); `v6-mean-cls` by 6.x (new module
type names, `{"pooling_mode": [...]}`, `max_seq_length` in `tokenizer_config.json`,
`truncate_dim` in `config_sentence_transformers.json`). Each version computes the
references of the fixtures it wrote, for every case listed in `references.json`:

  cls-dense-normalize  CLS + Dense(32->16, tanh) + Normalize; prompt `query`, include_prompt=false
  max                  max pooling; a prompt given as a string
  lasttoken            last-token pooling
  weightedmean         weighted-mean pooling; a named prompt (included in pooling)
  mean-prompt          mean, include_prompt=false, default_prompt_name=query
  v6-mean-cls          6.x: [mean, cls] (in that order), include_prompt=false,
                       Dense(64->24, identity) saved as pytorch_model.bin, Normalize,
                       truncate_dim 16 in the config

`texts.json` holds the 72 texts (from ../shared/data/corpus-dev.txt: a random sample, the
longest lines, and some with leading or trailing whitespace).
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "st"
MINILM = ROOT / "models" / "all-MiniLM-L6-v2"
CORPUS = ROOT.parent / "shared" / "data" / "corpus-dev.txt"

HIDDEN = 32
MAX_SEQ = 64
VOCAB = 600


def round_vec(v):
    return [float(f"{x:.7g}") for x in v]


def pick_texts():
    lines = [l.rstrip("\n") for l in CORPUS.read_text(encoding="utf8").splitlines()]
    lines = list(dict.fromkeys(l for l in lines if l.strip()))  # unique, in order
    rng = random.Random(18)
    sample = rng.sample([l for l in lines if 10 <= len(l) <= 300], 56)
    longest = sorted(lines, key=len)[-6:]
    taken = set(sample) | set(longest)
    spaced = rng.sample([l for l in lines if 10 <= len(l) <= 120 and l not in taken], 10)
    pads = ["  ", "\t", "\n", " \n ", "\u3000", "   "]
    spaced = [
        (pads[i % len(pads)] if i % 3 != 1 else "") + t + (pads[(i + 2) % len(pads)] if i % 3 != 0 else "")
        for i, t in enumerate(spaced)
    ]
    return sample + longest + spaced


def build_vocab(texts, work):
    from transformers import BertTokenizerFast

    full = BertTokenizerFast.from_pretrained(str(MINILM))
    corpus = [l for l in CORPUS.read_text(encoding="utf8").splitlines() if l.strip()][:4000]
    counts = Counter()
    for line in corpus:
        counts.update(full.tokenize(line))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = list(specials)
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    for c in chars:
        if c in full.vocab and c not in vocab:
            vocab.append(c)
    for c in "abcdefghijklmnopqrstuvwxyz0123456789":
        if "##" + c in full.vocab:
            vocab.append("##" + c)
    for piece, _ in counts.most_common():
        if len(vocab) >= VOCAB:
            break
        if piece not in vocab and piece in full.vocab:
            vocab.append(piece)
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    ids = {piece: i for i, piece in enumerate(vocab)}
    backend = Tokenizer(WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tok = BertTokenizerFast(tokenizer_object=backend, do_lower_case=True)
    assert len(tok.tokenize("the cat sat on the mat")) >= 6, tok.tokenize("the cat sat on the mat")
    assert len(tok.get_vocab()) == len(vocab), len(tok.get_vocab())
    return tok


def base_model(tok, work, name, seed):
    """A random-weight BERT in `work/name` with the tokenizer: weights drawn wide enough
    (std 0.5) that attention mixes tokens and texts get distinct vectors."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(tok.vocab),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.5,
        pad_token_id=0,
    )
    model = BertModel(cfg, add_pooling_layer=False)
    path = work / name
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return path


def encode_cases(model, texts, cases):
    out = []
    for case in cases:
        kwargs = {"batch_size": 16, "convert_to_numpy": True}
        for key in ("prompt_name", "prompt", "truncate_dim"):
            if case.get(key) is not None:
                kwargs[key] = case[key]
        vectors = model.encode(texts, **kwargs)
        out.append(dict(case, embeddings=[round_vec(v) for v in vectors.tolist()]))
    return out


def finish(dest, st_version, cases):
    # Only what modelhost reads, plus the configs sentence-transformers reads.
    for junk in ["README.md", "vocab.txt", "special_tokens_map.json"]:
        (dest / junk).unlink(missing_ok=True)
    refs = {"sentence_transformers": st_version, "cases": cases}
    (dest / "references.json").write_text(json.dumps(refs, separators=(",", ":")) + "\n", encoding="utf8")


def classic(work):
    """Runs under sentence-transformers 5.x: the classic fixtures."""
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer, models

    assert sentence_transformers.__version__.startswith("5."), sentence_transformers.__version__
    texts = json.loads((OUT / "texts.json").read_text(encoding="utf8"))
    specs = [
        (
            "cls-dense-normalize",
            dict(pooling_mode="cls", include_prompt=False),
            True,
            True,
            {"query": "query: "},
            None,
            [{"name": "no prompt"}, {"name": "query", "prompt_name": "query"}, {"name": "truncate 8", "truncate_dim": 8}],
        ),
        ("max", dict(pooling_mode="max"), False, False, {}, None,
         [{"name": "no prompt"}, {"name": "prompt string", "prompt": "Represent this sentence: "}]),
        ("lasttoken", dict(pooling_mode="lasttoken"), False, False, {}, None, [{"name": "no prompt"}]),
        ("weightedmean", dict(pooling_mode="weightedmean"), False, False, {"query": "search query: "}, None,
         [{"name": "no prompt"}, {"name": "query", "prompt_name": "query"}]),
        (
            "mean-prompt",
            dict(pooling_mode="mean", include_prompt=False),
            False,
            False,
            {"query": "query: ", "passage": "passage: ", "none": ""},
            "query",
            [
                {"name": "default prompt"},
                {"name": "passage", "prompt_name": "passage"},
                {"name": "empty prompt", "prompt_name": "none"},
                {"name": "prompt string", "prompt": "Represent this sentence for retrieval: "},
            ],
        ),
    ]
    for i, (name, pooling, dense, normalize, prompts, default, cases) in enumerate(specs):
        base = work / f"base-{name}"
        transformer = models.Transformer(str(base), max_seq_length=MAX_SEQ)
        modules = [transformer, models.Pooling(HIDDEN, **pooling)]
        if dense:
            torch.manual_seed(100 + i)
            modules.append(models.Dense(HIDDEN, 16, activation_function=torch.nn.Tanh()))
        if normalize:
            modules.append(models.Normalize())
        st = SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name=default, device="cpu")
        dest = OUT / name
        shutil.rmtree(dest, ignore_errors=True)
        st.save(str(dest), create_model_card=False)
        st = SentenceTransformer(str(dest), device="cpu")
        finish(dest, sentence_transformers.__version__, encode_cases(st, texts, cases))
        print("wrote", dest)


def v6(work):
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    assert sentence_transformers.__version__.startswith("6."), sentence_transformers.__version__
    texts = json.loads((OUT / "texts.json").read_text(encoding="utf8"))
    name = "v6-mean-cls"
    transformer = Transformer(str(work / f"base-{name}"), max_seq_length=MAX_SEQ)
    pooling = Pooling(HIDDEN, pooling_mode=("mean", "cls"), include_prompt=False)
    torch.manual_seed(200)
    dense = Dense(2 * HIDDEN, 24, activation_function=torch.nn.Identity())
    st = SentenceTransformer(
        modules=[transformer, pooling, dense, Normalize()],
        prompts={"query": "query: "},
        truncate_dim=16,
        device="cpu",
    )
    dest = OUT / name
    shutil.rmtree(dest, ignore_errors=True)
    st.save(str(dest), create_model_card=False)
    # The Dense weights as a PyTorch checkpoint, to cover that loader.
    (dest / "2_Dense" / "model.safetensors").unlink()
    dense.save(str(dest / "2_Dense"), safe_serialization=False)
    st = SentenceTransformer(str(dest), device="cpu")
    cases = [
        {"name": "no prompt (truncate_dim 16 from the config)"},
        {"name": "query", "prompt_name": "query"},
        {"name": "truncate 8", "prompt_name": "query", "truncate_dim": 8},
    ]
    finish(dest, sentence_transformers.__version__, encode_cases(st, texts, cases))
    print("wrote", dest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--st5", help="a directory holding sentence-transformers 5.x (pip --target)")
    ap.add_argument("--classic", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.classic:
        classic(Path(args.classic))
        return
    if not args.st5:
        sys.exit("--st5 DIR is needed: the classic fixtures are written by sentence-transformers 5.x")
    OUT.mkdir(parents=True, exist_ok=True)
    texts = pick_texts()
    (OUT / "texts.json").write_text(json.dumps(texts, ensure_ascii=False, indent=0) + "\n", encoding="utf8")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tok = build_vocab(texts, work)
        names = ["cls-dense-normalize", "max", "lasttoken", "weightedmean", "mean-prompt", "v6-mean-cls"]
        for i, name in enumerate(names):
            base_model(tok, work, f"base-{name}", seed=i + 1)
        env = dict(os.environ, PYTHONPATH=args.st5)
        subprocess.run([sys.executable, __file__, "--classic", str(work)], env=env, check=True)
        v6(work)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"tests/fixtures/st: {total} bytes")


if __name__ == "__main__":
    main()
