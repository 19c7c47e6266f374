#!/usr/bin/env python3
"""Soak test of modelhost-serve (not run in CI): many concurrent clients, requests of
mixed sizes, some of them invalid, while a SIGHUP swaps the model's versions every few
seconds. Every answer is checked (the right probabilities and class for its input and the
version that answered, or the typed error its input deserves, never another request's),
and the server's RSS and open file descriptors are compared between warm-up and the end.

Usage: scripts/soak.py [--requests 100000] [--clients 64] [--swap-every 3]
         [--server target/release/modelhost-serve]
Build the server first: cargo build --release --features server --bin modelhost-serve
Prints one JSON line of figures; exits 1 when an answer was wrong or a bound was missed.
"""
import argparse
import csv
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = {
    "a": os.path.join(ROOT, "examples/assets/digits"),
    "b": os.path.join(ROOT, "examples/assets/digits-v1"),
}
# The MiniLM embedder (scripts/fetch-models.sh): both "weights sets" are the same model.
MINILM = {w: os.path.join(ROOT, "models/all-MiniLM-L6-v2") for w in ("a", "b")}
WEIGHTS = DIGITS
TEXT = False
SIZES = [1, 1, 1, 2, 4, 8, 16, 32]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def infer(conn, rows, version=None):
    path = "/v2/models/digits" + (f"/versions/{version}" if version else "") + "/infer"
    if TEXT:
        tensor = {"name": "text", "datatype": "BYTES", "shape": [len(rows)], "data": rows}
    else:
        tensor = {"name": "pixels", "datatype": "FP32", "shape": [len(rows), 64],
                  "data": [x for r in rows for x in r]}
    body = json.dumps({"inputs": [tensor]})
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def add_version(repo, version, weights, versions):
    """Deploys `weights` as `version`: copied under a temporary name, renamed into place."""
    partial = os.path.join(repo, "digits", f".{version}.partial")
    shutil.copytree(WEIGHTS[weights], partial)
    versions[str(version)] = weights
    os.rename(partial, os.path.join(repo, "digits", str(version)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--swap-every", type=float, default=3.0)
    ap.add_argument("--server", default=os.path.join(ROOT, "target/release/modelhost-serve"))
    ap.add_argument("--warm", type=int, default=5000,
                    help="the request after which RSS and fds are taken as the warm baseline")
    ap.add_argument("--model", choices=["digits", "minilm"], default="digits",
                    help="digits: the shipped MLP, two versions with different weights; "
                         "minilm: the reference embedder (slow: use a few thousand requests)")
    args = ap.parse_args()

    global WEIGHTS, SIZES, TEXT
    if args.model == "minilm":
        WEIGHTS, SIZES, TEXT = MINILM, [1, 1, 2, 4], True
        corpus = os.path.join(ROOT, "../shared/data/corpus-dev.txt")
        with open(corpus, encoding="utf-8") as f:
            pool = [line.rstrip("\n") for line in f][:256]
    else:
        with open(os.path.join(DIGITS["a"], "digits.csv")) as f:
            pool = [[float(x) for x in row[:64]] for row in csv.reader(f)][:256]
    repo = tempfile.mkdtemp(prefix="modelhost-soak-")
    os.makedirs(os.path.join(repo, "digits"))
    versions = {}  # version name -> weights set; written before the server can see it
    add_version(repo, 1, "a", versions)
    add_version(repo, 2, "b", versions)
    port = free_port()
    server = subprocess.Popen([args.server, "--models", repo, "--addr", f"127.0.0.1:{port}",
                               "--queue-capacity", "4096"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return run(args, pool, repo, versions, port, server)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(repo, ignore_errors=True)


def run(args, pool, repo, versions, port, server):
    deadline = time.time() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/v2/health/ready")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                break
        except OSError:
            pass
        if time.time() > deadline or server.poll() is not None:
            print("the server did not become ready", file=sys.stderr)
            return 1
        time.sleep(0.2)
    # References: every input of the pool on each set of weights.
    reference = {}
    for version, weights in (("1", "a"), ("2", "b")):
        status, body = infer(conn, pool, version)
        assert status == 200, body
        reference[weights] = [answer_row(body, i) for i in range(len(pool))]
    conn.close()

    lock = threading.Lock()
    counts = {"ok": 0, "rows": 0, "invalid_400": 0, "shed": 0, "wrong": 0, "errors": 0}
    wrong = []
    issued = [0]
    warm = {}

    def client(seed):
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if issued[0] >= args.requests:
                    break
                issued[0] += 1
                n = issued[0]
            if n == args.warm:
                warm["rss"], warm["fds"] = rss_kb(server.pid), fds(server.pid)
                warm["threads"] = thread_count(server.pid)
            idx = [rng.randrange(len(pool)) for _ in range(rng.choice(SIZES))]
            rows = [pool[i] if TEXT else list(pool[i]) for i in idx]
            bad = rng.random() < 0.05
            if bad and TEXT:
                rows[rng.randrange(len(rows))] = 42  # a number where a BYTES text belongs
            elif bad:
                rows[rng.randrange(len(rows))][0] = 99.0  # outside the model's 0..16
            try:
                status, body = infer(conn, rows)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                with lock:
                    counts["errors"] += 1
                    wrong.append(f"transport: {e!r}")
                continue
            verdict = check(status, body, idx, bad, versions, reference)
            with lock:
                counts[verdict] += 1
                if verdict == "ok":
                    counts["rows"] += len(rows)
                if verdict in ("wrong", "errors") and len(wrong) < 20:
                    wrong.append(f"{status} {json.dumps(body)[:300]}")
        conn.close()

    stop = threading.Event()
    swaps = [0]

    def swapper():
        newest = 2
        weights = "b"
        while not stop.wait(args.swap_every / 2):
            newest += 1
            weights = "a" if weights == "b" else "b"
            add_version(repo, newest, weights, versions)
            server.send_signal(signal.SIGHUP)
            if stop.wait(args.swap_every / 2):
                break
            shutil.rmtree(os.path.join(repo, "digits", str(newest - 1)))
            server.send_signal(signal.SIGHUP)
            swaps[0] += 1

    started = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    swap_thread = threading.Thread(target=swapper)
    swap_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    swap_thread.join()
    elapsed = time.time() - started
    time.sleep(2)  # let closed connections and retired versions go
    end_rss, end_fds, end_threads = rss_kb(server.pid), fds(server.pid), thread_count(server.pid)
    rss_ratio = end_rss / warm["rss"] if warm.get("rss") else float("nan")
    # Idle threads of the async runtime's blocking pool exit after 10 s: measure again.
    time.sleep(15)
    idle_rss, idle_threads = rss_kb(server.pid), thread_count(server.pid)
    result = {
        "requests": issued[0], "clients": args.clients, "seconds": round(elapsed, 1),
        "swaps": swaps[0], **counts,
        "rss_warm_mb": round(warm.get("rss", 0) / 1024, 1), "rss_end_mb": round(end_rss / 1024, 1),
        "rss_ratio": round(rss_ratio, 3), "fds_warm": warm.get("fds"), "fds_end": end_fds,
        "threads_warm": warm.get("threads"), "threads_end": end_threads,
        "rss_idle_mb": round(idle_rss / 1024, 1), "threads_idle": idle_threads,
        "server_alive": server.poll() is None,
    }
    print(json.dumps(result))
    for w in wrong[:10]:
        print("  " + w, file=sys.stderr)
    ok = (counts["wrong"] == 0 and counts["errors"] == 0 and rss_ratio <= 1.2
          and end_fds <= warm.get("fds", 0) and result["server_alive"])
    return 0 if ok else 1


def check(status, body, idx, bad, versions, reference):
    """'ok', 'invalid_400', 'shed' or 'wrong' for one answer."""
    if bad:
        return "invalid_400" if status == 400 and body.get("error") else "wrong"
    if status in (429, 503):
        return "shed"
    if status != 200:
        return "wrong"
    weights = versions.get(body.get("model_version"))
    if weights is None:
        return "wrong"
    for row, i in enumerate(idx):
        want_class, want = reference[weights][i]
        got_class, got = answer_row(body, row)
        # Probabilities to 1e-5; embedding components to 1e-4 (a text's vector may move in
        # the last bits with the batch it shares a GEMM with).
        tolerance = 1e-4 if want_class is None else 1e-5
        if got_class != want_class or any(abs(a - b) > tolerance for a, b in zip(got, want)):
            return "wrong"
    return "ok"


def answer_row(body, row):
    """(class, probabilities) of a classifier's row, or (None, embedding) of an embedder's."""
    out = {o["name"]: o for o in body["outputs"]}
    if "embedding" in out:
        dim = out["embedding"]["shape"][1]
        return None, out["embedding"]["data"][row * dim:(row + 1) * dim]
    return out["class"]["data"][row], out["probabilities"]["data"][row * 10:(row + 1) * 10]


if __name__ == "__main__":
    sys.exit(main())
