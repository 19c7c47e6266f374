#!/usr/bin/env python3
"""Writes the architecture parity fixtures in tests/fixtures/arch/ (committed, ~2 MB).

Never run in CI: it needs PyTorch, transformers and sentence-transformers 6.x. The committed
fixtures are what `tests/architectures.rs` reads. To rebuild them:

    python3 -m venv /tmp/st && /tmp/st/bin/pip install sentence-transformers   # 6.x + torch
    /tmp/st/bin/python scripts/make-arch-fixtures.py

For each architecture (roberta, xlm-roberta, distilbert, mpnet) it makes three small
random-weight models (hidden 32, 2 layers, 4 heads, weights drawn with std 0.5 so attention
mixes tokens and texts get distinct vectors) with a real tokenizer of the family, trained on
../shared/data/corpus-dev.txt:

  roberta      byte-level BPE, `<s> A </s></s> B </s>`, positions from padding_idx + 1
  xlm-roberta  SentencePiece unigram (metaspace), positions from padding_idx + 1
  distilbert   WordPiece (all-MiniLM-L6-v2's vocabulary cut down), no token types
  mpnet        WordPiece with `<s>`/`</s>`, positions from padding_idx + 1 and a relative
               position bias in every attention layer

  embed     a sentence-transformers model (Transformer, max_seq_length 64, + Pooling):
            references are `SentenceTransformer.encode` of `texts.json`
  classify  `AutoModelForSequenceClassification`, 3 labels: references are the logits
            transformers computes on padded batches (model_max_length 64, truncation)
  rerank    a sentence-transformers `CrossEncoder` (1 label, max_length 64): references are
            `CrossEncoder.predict` scores of `pairs.json`

max_position_embeddings is 66 for the families that number positions from padding_idx + 1,
so the longest texts truncate at exactly the 64 positions the tables hold.

With `--real-mpnet`, it also writes `all-mpnet-base-v2.json`: what sentence-transformers
computes with the real all-mpnet-base-v2 (`scripts/fetch-models.sh --mpnet` puts it in
models/) for 40 texts of ../shared/data/minilm-reference.jsonl (its 8 longest, truncated
at 384 tokens, and 32 others), for the ignored real-weights test.

`mpnet-buckets.json` holds MPNet's relative-position bucket (transformers'
`relative_position_bucket`, 32 buckets, max distance 128) of every distance -600..600.
"""

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "arch"
ST_TEXTS = ROOT / "tests" / "fixtures" / "st" / "texts.json"
MINILM = ROOT / "models" / "all-MiniLM-L6-v2"
CORPUS = ROOT.parent / "shared" / "data" / "corpus-dev.txt"

HIDDEN = 32
MAX_SEQ = 64
VOCAB = 600

MULTILINGUAL = [
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "敏捷的棕色狐狸跳过了懒狗。",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "素早い茶色の狐がのろまな犬を飛び越える。",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
]


def round_vec(v):
    return [float(f"{x:.7g}") for x in v]


def corpus_lines(n=4000):
    lines = [l for l in CORPUS.read_text(encoding="utf8").splitlines() if l.strip()]
    return lines[:n]


def wordpiece_vocab(specials):
    """all-MiniLM-L6-v2's WordPiece vocabulary cut to VOCAB pieces: `specials` first, then
    ASCII characters and their `##` forms, then the pieces most frequent in the corpus."""
    from collections import Counter

    from transformers import BertTokenizerFast

    full = BertTokenizerFast.from_pretrained(str(MINILM))
    counts = Counter()
    for line in corpus_lines():
        counts.update(full.tokenize(line))
    vocab = list(specials)
    for c in [chr(c) for c in range(33, 127) if not chr(c).isupper()]:
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
    return {piece: i for i, piece in enumerate(vocab)}


def tokenizer(arch):
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.implementations import ByteLevelBPETokenizer

    training = corpus_lines() + MULTILINGUAL * 20
    if arch == "roberta":
        from transformers import RobertaTokenizer

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            training, vocab_size=VOCAB, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        )
        model = json.loads(bpe.to_str())["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return RobertaTokenizer(vocab=model["vocab"], merges=merges, model_max_length=MAX_SEQ)
    if arch == "xlm-roberta":
        from transformers import XLMRobertaTokenizer

        spm = SentencePieceUnigramTokenizer()
        spm.train_from_iterator(
            training, vocab_size=VOCAB, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"
        )
        pieces = [tuple(p) for p in json.loads(spm.to_str())["model"]["vocab"]] + [("<mask>", 0.0)]
        return XLMRobertaTokenizer(vocab=pieces, model_max_length=MAX_SEQ)
    if arch == "distilbert":
        from transformers import DistilBertTokenizer

        vocab = wordpiece_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        return DistilBertTokenizer(vocab=vocab, model_max_length=MAX_SEQ)
    if arch == "mpnet":
        from transformers import MPNetTokenizer

        vocab = wordpiece_vocab(["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"])
        return MPNetTokenizer(vocab=vocab, model_max_length=MAX_SEQ)
    raise ValueError(arch)


def config(arch, tok, **extra):
    from transformers import DistilBertConfig, MPNetConfig, RobertaConfig, XLMRobertaConfig

    vocab = len(tok.get_vocab())
    common = dict(vocab_size=vocab, initializer_range=0.5, **extra)
    if arch == "distilbert":
        return DistilBertConfig(
            dim=HIDDEN, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128,
            pad_token_id=tok.pad_token_id, **common
        )
    shape = dict(
        hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=MAX_SEQ + 2, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **common
    )
    if arch == "roberta":
        return RobertaConfig(type_vocab_size=1, **shape)
    if arch == "xlm-roberta":
        return XLMRobertaConfig(type_vocab_size=1, **shape)
    if arch == "mpnet":
        assert tok.pad_token_id == 1, tok.pad_token_id  # MPNet's padding_idx is fixed at 1
        return MPNetConfig(relative_attention_num_buckets=32, **shape)
    raise ValueError(arch)


def check_tokenizer(path, tok, texts, pairs):
    """The saved tokenizer.json (what modelhost reads) must give the ids Python uses."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(path / "tokenizer.json"))
    raw.no_truncation()
    raw.no_padding()
    for t in texts[:40]:
        assert raw.encode(t).ids == tok(t, truncation=False)["input_ids"], t
    for a, b in pairs[:20]:
        assert raw.encode(a, b).ids == tok(a, b, truncation=False)["input_ids"], (a, b)


def strip(path):
    for junk in ["README.md", "vocab.txt", "merges.txt", "special_tokens_map.json", "sentencepiece.bpe.model"]:
        (path / junk).unlink(missing_ok=True)


def write_refs(path, refs):
    (path / "references.json").write_text(json.dumps(refs, separators=(",", ":")) + "\n", encoding="utf8")


def embed(arch, tok, texts, pairs, seed):
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoModel

    path = OUT / arch / "embed"
    torch.manual_seed(seed)
    model = AutoModel.from_config(config(arch, tok))
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    transformer = models.Transformer(str(path), max_seq_length=MAX_SEQ)
    pooling = models.Pooling(HIDDEN, pooling_mode="mean")
    st = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    st.save(str(path))
    strip(path)
    st = SentenceTransformer(str(path), device="cpu")
    check_tokenizer(path, st.tokenizer, texts, pairs)
    vectors = st.encode(texts, batch_size=16, convert_to_numpy=True)
    write_refs(path, {
        "sentence_transformers": sentence_transformers.__version__,
        "embeddings": [round_vec(v) for v in vectors.tolist()],
    })


def classify(arch, tok, texts, pairs, seed):
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification

    path = OUT / arch / "classify"
    torch.manual_seed(seed)
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    cfg = config(arch, tok, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    strip(path)
    check_tokenizer(path, tok, texts, pairs)
    logits = []
    with torch.no_grad():
        for i in range(0, len(texts), 16):
            enc = tok(texts[i:i + 16], truncation=True, max_length=MAX_SEQ, padding=True, return_tensors="pt")
            logits.extend(model(**enc).logits.tolist())
    write_refs(path, {"transformers": transformers.__version__, "logits": [round_vec(l) for l in logits]})


def rerank(arch, tok, texts, pairs, seed):
    import sentence_transformers
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification

    path = OUT / arch / "rerank"
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config(arch, tok, num_labels=1)).eval()
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    ce = CrossEncoder(str(path), max_length=MAX_SEQ, device="cpu")
    ce.save(str(path))
    strip(path)
    ce = CrossEncoder(str(path), device="cpu")
    check_tokenizer(path, ce.tokenizer, texts, pairs)
    scores = ce.predict(pairs, batch_size=16, convert_to_numpy=True)
    write_refs(path, {
        "sentence_transformers": sentence_transformers.__version__,
        "scores": [float(f"{s:.7g}") for s in scores.tolist()],
    })


def mpnet_buckets():
    import torch
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    rel = torch.arange(-600, 601)
    buckets = MPNetEncoder.relative_position_bucket(rel, num_buckets=32, max_distance=128)
    (OUT / "mpnet-buckets.json").write_text(
        json.dumps({"from": -600, "buckets": buckets.tolist()}, separators=(",", ":")) + "\n", encoding="utf8"
    )


def real_mpnet():
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    refs = [json.loads(l) for l in (ROOT.parent / "shared" / "data" / "minilm-reference.jsonl").read_text(encoding="utf8").splitlines()]
    texts = [r["text"] for r in refs]
    longest = sorted(texts, key=len)[-8:]
    others = [t for t in texts if t not in longest and t == t.strip()][:32]
    texts = longest + others
    st = SentenceTransformer(str(ROOT / "models" / "all-mpnet-base-v2"), device="cpu")
    vectors = st.encode(texts, batch_size=8, convert_to_numpy=True)
    out = {
        "sentence_transformers": sentence_transformers.__version__,
        "texts": texts,
        "embeddings": [[float(f"{x:.6g}") for x in v] for v in vectors.tolist()],
    }
    (OUT / "all-mpnet-base-v2.json").write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf8")


def main():
    import sys

    if "--real-mpnet" in sys.argv:
        real_mpnet()
        return
    OUT.mkdir(parents=True, exist_ok=True)
    texts = json.loads(ST_TEXTS.read_text(encoding="utf8")) + MULTILINGUAL
    rng = random.Random(18)
    pairs = []
    for i in range(48):
        query = " ".join(texts[i].split()[:6]) or "empty"
        passage = texts[i] if i % 3 == 0 else texts[rng.randrange(len(texts))]
        pairs.append([query, passage])
    pairs.append(["a long query " * 30, texts[60]])  # both sides long: the longer one is cut
    (OUT / "texts.json").write_text(json.dumps(texts, ensure_ascii=False, indent=0) + "\n", encoding="utf8")
    (OUT / "pairs.json").write_text(json.dumps(pairs, ensure_ascii=False, indent=0) + "\n", encoding="utf8")
    for n, arch in enumerate(["roberta", "xlm-roberta", "distilbert", "mpnet"]):
        tok = tokenizer(arch)
        embed(arch, tok, texts, pairs, seed=100 + n)
        classify(arch, tok, texts, pairs, seed=200 + n)
        rerank(arch, tok, texts, pairs, seed=300 + n)
        print(arch, "done")
    mpnet_buckets()


if __name__ == "__main__":
    main()
