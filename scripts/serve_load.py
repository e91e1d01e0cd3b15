#!/usr/bin/env python3
"""Load test for `ttq serve`: N concurrent clients send M requests in all, streamed or not.

Every request must be answered exactly once: a request without a complete answer (an HTTP
error, no `data: [DONE]`, no finish reason) is *failed*, an answer id seen twice is
*duplicated*; the script exits 1 if any request failed or was duplicated. It reports p50/p99
time to first token (streaming) and latency, and generated tokens per second over the run
(all clients together).

Prompts are cut from the evaluation texts (WikiText-2, PTB, C4 sample in turn, so that
the traffic mixes domains); with --data-dir missing, a built-in sentence is used.
Standard library only, so it runs on a bare GPU machine.

Example (CPU, Gemma 3 270M):
    ttq serve --model .cache/models/gemma3-270m --method ttq --bits 4 --alpha 0.25 --port 8080 &
    python3 scripts/serve_load.py --url http://127.0.0.1:8080 --clients 64 --requests 128 \
        --max-tokens 32 --stream --json serve_load.json
"""
import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse


def prompts_from(data_dir, count, words):
    """`count` prompts of about `words` words, cycling over the three texts."""
    texts = []
    for name in ("wiki.test.raw", "ptb.test.txt", "c4-train.00000-sample-1000.jsonl"):
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            if name.endswith(".jsonl"):
                raw = " ".join(json.loads(line)["text"] for _, line in zip(range(200), f))
            else:
                raw = f.read(400_000)
        texts.append(raw.split())
    if not texts:
        texts = [("The quick brown fox jumps over the lazy dog. " * 50).split()]
    out = []
    for i in range(count):
        t = texts[i % len(texts)]
        start = (i // len(texts)) * words * 3 % max(1, len(t) - words)
        out.append(" ".join(t[start : start + words]))
    return out


def one_request(url, body, stream, timeout):
    """Sends one completion; returns a result dict (never raises)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    t0 = time.perf_counter()
    result = {"ok": False, "id": None, "ttft": None, "latency": None, "tokens": 0, "error": None, "ttq": None}
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            result["error"] = f"HTTP {resp.status}: {resp.read()[:200]!r}"
            return result
        if not stream:
            v = json.loads(resp.read())
            result.update(
                ok=v["choices"][0]["finish_reason"] is not None,
                id=v["id"],
                latency=time.perf_counter() - t0,
                tokens=v["usage"]["completion_tokens"],
                ttq=v.get("ttq"),
            )
            return result
        finish, done = None, False
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.decode("utf-8").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                result["error"] = chunk["error"]["message"]
                continue
            result["id"] = chunk.get("id", result["id"])
            for choice in chunk.get("choices", []):
                if choice.get("text") and result["ttft"] is None:
                    result["ttft"] = time.perf_counter() - t0
                finish = choice.get("finish_reason") or finish
            if chunk.get("ttq"):
                result["ttq"] = chunk["ttq"]
            if chunk.get("usage"):
                result["tokens"] = chunk["usage"]["completion_tokens"]
        result["latency"] = time.perf_counter() - t0
        result["ok"] = done and finish is not None and result["error"] is None
        if not result["ok"] and result["error"] is None:
            result["error"] = "stream ended without a finish reason and [DONE]"
    except Exception as e:  # a lost connection is a failed request, not a crash of the test
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    return result


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=128, help="requests in all")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--prompt-words", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per request")
    ap.add_argument("--json", help="write the summary and every request's result here")
    args = ap.parse_args()

    prompts = prompts_from(args.data_dir, args.requests, args.prompt_words)
    results = [None] * args.requests
    next_index = iter(range(args.requests))
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            body = {"model": "ttq", "prompt": prompts[i], "max_tokens": args.max_tokens,
                    "temperature": args.temperature, "seed": i, "stream": args.stream}
            if args.stream:
                body["stream_options"] = {"include_usage": True}
            results[i] = one_request(args.url, body, args.stream, args.timeout)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    ok = [r for r in results if r and r["ok"]]
    failed = [r for r in results if not r or not r["ok"]]
    ids = [r["id"] for r in ok]
    duplicated = len(ids) - len(set(ids))
    tokens = sum(r["tokens"] for r in ok)
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    latency = [r["latency"] for r in ok]
    summary = {
        "url": args.url, "clients": args.clients, "requests": args.requests, "stream": args.stream,
        "max_tokens": args.max_tokens, "prompt_words": args.prompt_words,
        "answered": len(ok), "failed": len(failed), "duplicated": duplicated,
        "wall_seconds": wall, "completion_tokens": tokens, "tokens_per_second": tokens / wall,
        "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
        "latency_p50": percentile(latency, 50), "latency_p99": percentile(latency, 99),
    }
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    print(f"{len(ok)}/{args.requests} answered, {len(failed)} failed, {duplicated} duplicated, "
          f"{args.clients} clients, {wall:.1f} s")
    print(f"time to first token p50 {fmt(summary['ttft_p50'])} s, p99 {fmt(summary['ttft_p99'])} s | "
          f"latency p50 {fmt(summary['latency_p50'])} s, p99 {fmt(summary['latency_p99'])} s | "
          f"{tokens} tokens, {summary['tokens_per_second']:.1f} tok/s")
    for r in failed[:5]:
        print("failed:", (r or {}).get("error", "no result"), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "results": results}, f, indent=1)
    sys.exit(1 if failed or duplicated else 0)


if __name__ == "__main__":
    main()
