"""The server's OpenAI route (POST /v1/embeddings) checked with OpenAI's own Python SDK.

Usage: python tests/openai/test_openai.py HOST:PORT

The server must serve the repository that scripts/model-repo.sh lays out (minilm/1 is the
sentence embedder). Embeddings are compared with sentence-transformers' own
(tests/data/minilm-reference.jsonl). Every check is a function named check_*; the last line
printed is "N passed, M failed" and the exit status is 1 if any failed.
"""

import json
import math
import pathlib
import sys
import traceback

import openai

ROOT = pathlib.Path(__file__).resolve().parents[2]
URL = sys.argv[1]
client = openai.OpenAI(base_url=f"http://{URL}/v1", api_key="unused", max_retries=0)


def references(n):
    lines = (ROOT / "tests/data/minilm-reference.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:n]]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def check_embeddings(**options):
    refs = references(12)
    answer = client.embeddings.create(model="minilm", input=[r["text"] for r in refs], **options)
    assert answer.model == "minilm", answer.model
    assert [d.index for d in answer.data] == list(range(len(refs))), "order preserved"
    assert answer.usage.prompt_tokens > len(refs) * 2, answer.usage
    assert answer.usage.total_tokens == answer.usage.prompt_tokens, answer.usage
    worst = min(cosine(d.embedding, r["embedding"]) for d, r in zip(answer.data, refs))
    assert worst >= 0.9999, f"min cosine {worst}"
    print(f"    {options or 'defaults (base64)'}: 12 texts, min cosine {worst:.6f}, "
          f"{answer.usage.prompt_tokens} tokens")


def check_default_encoding_is_base64_and_matches_sentence_transformers():
    check_embeddings()


def check_float_encoding_matches_sentence_transformers():
    check_embeddings(encoding_format="float")


def check_one_text_and_fewer_dimensions():
    ref = references(1)[0]
    answer = client.embeddings.create(model="minilm", input=ref["text"], dimensions=128)
    vector = answer.data[0].embedding
    assert len(vector) == 128, len(vector)
    assert abs(math.sqrt(sum(x * x for x in vector)) - 1) < 1e-5
    assert cosine(vector, ref["embedding"][:128]) >= 0.9999


def check_unknown_model_is_a_404_in_openais_shape():
    try:
        client.embeddings.create(model="text-embedding-3-small", input="hello")
    except openai.NotFoundError as e:
        assert e.status_code == 404
        assert e.code == "model_not_found", e.body
        assert "no model named `text-embedding-3-small`" in e.body["message"], e.body
        return
    raise AssertionError("expected a 404")


def check_token_ids_are_refused_with_a_400():
    try:
        client.embeddings.create(model="minilm", input=[[101, 7592, 102]])
    except openai.BadRequestError as e:
        assert e.body["param"] == "input", e.body
        assert "token-id arrays are not supported" in e.body["message"], e.body
        return
    raise AssertionError("expected a 400")


def main():
    checks = [(n, f) for n, f in globals().items() if n.startswith("check_") and n != "check_embeddings"]
    passed = failed = 0
    for name, check in checks:
        try:
            check()
            print(f"ok   {name}")
            passed += 1
        except Exception:  # noqa: BLE001 - report every failure, then go on
            print(f"FAIL {name}")
            traceback.print_exc()
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
