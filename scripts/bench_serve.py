"""Load test of `llm4rec serve` on localhost: dynamic batching against one request at a time.

    python scripts/bench_serve.py --checkpoint runs/a --catalog data/ml100k-h5 [--requests 48]
        [--concurrency 1,4,16] [--candidates 10] [--max-wait-ms 5] [--out bench_serve.json]

Starts two servers on free 127.0.0.1 ports (``--no-batching``, and batching on) and, level by level,
sends the same fixed set of ``POST /recommend`` requests (a catalogue user each, ``--candidates`` seeded
random items, top 10) to one, then the other; prints p50/p95 latency, requests per second and the
batching / one-at-a-time throughput ratio per level. The load is bounded: ``--requests`` per level
(after two warm-up requests), each with a 600 s timeout; the servers are always stopped. Then the
scoring core alone, in this process: the prompts of 1, 4 and 16 of the requests scored in one call (as
the batch worker scores them) against one call per request, alternated ``--repeat`` times, the best
time of each (``--parts`` picks either part).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: argparse.Namespace, batching: bool) -> tuple[subprocess.Popen, str]:
    """A server subprocess and its URL, once /healthz answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "llm4rec.cli", "serve", "--checkpoint", str(args.checkpoint)]
    cmd += ["--catalog", str(args.catalog), "--port", str(port), "--max-wait-ms", str(args.max_wait_ms)]
    if not batching:
        cmd.append("--no-batching")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    stop(proc)
    raise SystemExit("server did not start within 300 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def requests_for(args: argparse.Namespace) -> list[dict]:
    """The fixed request set: users of the catalogue drawn with a fixed seed, seeded candidate lists."""
    from llm4rec.serve.catalog import Catalog

    cat = Catalog.load(args.catalog)
    users = [str(u) for u in cat.timeline.users.to_list()]
    rng = random.Random(0)
    return [
        {
            "user": rng.choice(users),
            "candidates": [cat.item_ids[i] for i in rng.sample(range(cat.n_items), args.candidates)],
            "k": 10,
            "keep_seen": True,
        }
        for _ in range(args.requests)
    ]


def run_level(url: str, bodies: list[dict], concurrency: int) -> dict[str, float]:
    """Send ``bodies`` with ``concurrency`` clients; latency percentiles and throughput."""
    latencies: list[float] = []
    lock = threading.Lock()
    next_index = iter(range(len(bodies)))
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as c:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                r = c.post("/recommend", json=bodies[i])
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if r.status_code != 200:
                        failures.append(r.text)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"{len(failures)} requests failed: {failures[0]}")
    lat = np.array(latencies) * 1000
    return {
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "req_per_s": round(len(bodies) / wall, 3),
    }


def core_ratio(
    args: argparse.Namespace, bodies: list[dict], levels: list[int]
) -> dict[int, dict[str, float]]:
    """The scoring core alone, in this process: the prompts of ``c`` requests scored in one call (as the
    batch worker does) against one call per request, the first ``c`` requests of the set."""
    from llm4rec.serve.catalog import Catalog
    from llm4rec.serve.model import LoadedModel, read_info

    cat = Catalog.load(args.catalog)
    model = LoadedModel(read_info(args.checkpoint))
    jobs = [cat.yes_no_samples(cat.user_history(b["user"]), cat.items(b["candidates"], "c")) for b in bodies]
    model.score_yes_no(jobs[0], [0] * len(jobs[0]))  # warm-up
    out = {}
    for c in levels:
        alone, together = [], []
        for _ in range(args.repeat):  # alternated, best of each: other load on the machine comes and goes
            t0 = time.perf_counter()
            for j in jobs[:c]:
                model.score_yes_no(j, [0] * len(j))
            alone.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.score_yes_no(
                [x for j in jobs[:c] for x in j], [g for g, j in enumerate(jobs[:c]) for _ in j]
            )
            together.append(time.perf_counter() - t0)
        alone_s, together_s = min(alone), min(together)
        out[c] = {"one_call_each_s": round(alone_s, 2), "one_call_s": round(together_s, 2)}
        print(f"     scoring core  {c:>2} requests: {out[c]} ratio {alone_s / together_s:.2f}x", flush=True)
    return out


def http_levels(args: argparse.Namespace, levels: list[int]) -> dict[str, dict[int, dict[str, float]]]:
    """Both servers at every level (see the module docstring); prints the table and returns the figures."""
    modes = (("one at a time", False), ("dynamic batching", True))
    results: dict[str, dict[int, dict[str, float]]] = {name: {} for name, _ in modes}
    # both servers up at once, each level run on one then the other: load from elsewhere on the machine
    # drifts over minutes, and back-to-back runs see about the same
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for name, batching in modes:
            servers[name] = start(args, batching)
        bodies = requests_for(args)
        for name, _ in modes:
            run_level(servers[name][1], bodies[:2], 1)  # warm-up
        for c in levels:
            for name, _ in modes:
                results[name][c] = run_level(servers[name][1], bodies, c)
                print(f"{name:>17}  concurrency {c:>2}: {results[name][c]}", flush=True)
    finally:
        for proc, _ in servers.values():
            stop(proc)
    print()
    print(
        "| concurrency | one at a time: p50 / p95 ms, req/s | dynamic batching: p50 / p95 ms, req/s | throughput ratio |"
    )
    print("| --- | --- | --- | --- |")
    for c in levels:
        a, b = results["one at a time"][c], results["dynamic batching"][c]
        print(
            f"| {c} | {a['p50_ms']} / {a['p95_ms']}, {a['req_per_s']} | {b['p50_ms']} / {b['p95_ms']}, "
            f"{b['req_per_s']} | {b['req_per_s'] / a['req_per_s']:.2f}x |"
        )
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--catalog", required=True, type=Path)
    ap.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--candidates", type=int, default=10, help="candidates per request")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--repeat", type=int, default=3, help="core part: alternated repeats (best of each)")
    ap.add_argument(
        "--parts", default="http,core", help="http (the two servers), core (the scoring core in-process)"
    )
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    parts = {x.strip() for x in args.parts.split(",")}
    info: dict = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    if "http" in parts:
        info["http"] = http_levels(args, levels)
    if "core" in parts:
        info["core"] = core_ratio(args, requests_for(args), levels)
    if args.out:
        args.out.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
