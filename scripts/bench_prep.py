"""Benchmark data prep at MovieLens-1M and -20M scale on synthetic logs in the real layouts.

    python scripts/bench_prep.py [--work /tmp/llm4rec-bench] [--skip-20m] [--sizes 1m,20m]

1. Writes synthetic logs shaped like the releases (1M: ``ratings.dat``/``movies.dat``, 6,040 users,
   3,706 items; 20M: ``ratings.csv``/``movies.csv``, 138,493 users, 26,744 items), with skewed user
   activity and item popularity, once (kept in --work for reruns).
2. Runs ``data_prep/movielens.py`` in a child process per configuration, reporting wall time and peak
   memory (the child's max RSS):
   * 1M: canonical tables + tallrec + ranking + instructrec (loo split), the speed target;
   * 1M and 20M: canonical tables + tallrec (loo split), for how time and memory grow.
3. Side by side in this process on the 1M log: the polars pipeline vs a plain-Python row loop (dicts and
   lists, the way published preprocessing scripts are written) building the same tallrec/loo samples,
   and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llm4rec.data.sources.movielens import ML100K_GENRES  # noqa: E402

SHAPES = {
    "1m": {"users": 6040, "items": 3706, "ratings": 1_000_209, "layout": "dat", "min": 20},
    "20m": {"users": 138_493, "items": 26_744, "ratings": 20_000_263, "layout": "csv", "min": 20},
}
# the first eleven real genres of the 100K release
GENRES = ML100K_GENRES[1:12]


def synthesize(out: Path, shape: dict, seed: int = 0) -> Path:
    """Write a synthetic MovieLens log of the given shape (skip if already there)."""
    done = out / "done.json"
    shape = {**shape, "generator": 2, "seed": seed}
    if done.is_file() and json.loads(done.read_text()) == shape:
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n_users, n_items, total = shape["users"], shape["items"], shape["ratings"]
    # user activity: log-normal above the release's minimum of 20, scaled to the total
    raw = rng.lognormal(0.0, 1.1, n_users)
    extra = raw / raw.sum() * (total - shape["min"] * n_users)
    counts = np.minimum(shape["min"] + np.floor(extra).astype(np.int64), n_items)
    # item popularity: Zipf-like; drawn with replacement at twice the need, repeats of a user dropped,
    # then each user cut to its count (a user keeps distinct items, as in the releases)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    draw_users = np.repeat(np.arange(1, n_users + 1), 2 * counts)
    draws = pl.DataFrame(
        {"u": draw_users, "i": rng.choice(n_items, size=len(draw_users), p=pop / pop.sum()) + 1}
    )
    draws = draws.unique(["u", "i"], keep="first", maintain_order=True)
    draws = draws.filter(pl.int_range(pl.len()).over("u") < pl.lit(pl.Series(counts)).gather(pl.col("u") - 1))
    users, items = draws["u"].to_numpy(), draws["i"].to_numpy()
    counts = np.bincount(users, minlength=n_users + 1)[1:]
    start = rng.integers(956_703_932, 1_300_000_000, n_users)
    gaps = rng.integers(0, 4000, len(users))
    first = np.repeat(np.cumsum(counts) - counts, counts)
    csum = np.cumsum(gaps)
    ts = np.repeat(start, counts) + csum - csum[first]
    ratings = rng.integers(1, 6, len(users)).astype(np.float64)
    if shape["layout"] == "csv":
        ratings -= rng.integers(0, 2, len(users)) * 0.5
        ratings = np.maximum(ratings, 0.5)
    # the releases are grouped by user, in no particular time order within a user
    order = np.lexsort((rng.random(len(users)), users))
    df = pl.DataFrame({"u": users[order], "i": items[order], "r": ratings[order], "t": ts[order]})
    titles = [f"Synthetic Film {k} ({1920 + k % 90})" for k in range(1, n_items + 1)]
    genres = ["|".join(sorted({GENRES[k % 11], GENRES[(k * 7) % 11]})) for k in range(1, n_items + 1)]
    if shape["layout"] == "dat":
        line = pl.concat_str(
            [pl.col("u"), pl.col("i"), pl.col("r").cast(pl.Int64), pl.col("t")], separator="::"
        )
        df.select(line).write_csv(out / "ratings.dat", include_header=False, quote_style="never")
        movies = "".join(f"{k}::{t}::{g}\n" for k, (t, g) in enumerate(zip(titles, genres), 1))
        (out / "movies.dat").write_bytes(movies.encode("iso-8859-1"))
    else:
        df.rename({"u": "userId", "i": "movieId", "r": "rating", "t": "timestamp"}).write_csv(
            out / "ratings.csv"
        )
        pl.DataFrame({"movieId": range(1, n_items + 1), "title": titles, "genres": genres}).write_csv(
            out / "movies.csv"
        )
    done.write_text(json.dumps(shape))
    return out


def run_child(args: list[str]) -> tuple[float, float, float, str]:
    """Run data prep in a child process: (wall seconds, CPU seconds, peak RSS in GB, its output)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "data_prep" / "movielens.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"data prep failed ({proc.returncode}):\n{out}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1e6, out


def python_loop_tallrec(src: Path, out: Path) -> int:
    """The same tallrec/loo samples built with dicts and loops (the contender); returns the sample count."""
    titles = {}
    for line in (src / "movies.dat").read_text(encoding="iso-8859-1").splitlines():
        f = line.split("::")
        titles[f[0]] = f[1]
    per_user: dict[str, list] = {}
    with open(src / "ratings.dat") as fh:
        for k, line in enumerate(fh):
            u, i, r, t = line.rstrip("\n").split("::")
            per_user.setdefault(u, []).append((int(t), k, i, int(float(r) > 3)))
    n = 0
    out.mkdir(parents=True, exist_ok=True)
    files = {s: open(out / f"{s}.jsonl", "w", encoding="utf-8") for s in ("train", "valid", "test")}  # noqa: SIM115
    instruction = (
        "Given the user's preference and unpreference, identify whether the user will like the target movie "
        'by answering "Yes." or "No.".'
    )
    for u, evs in per_user.items():
        evs.sort()
        for p in range(1, len(evs)):
            hist = evs[max(0, p - 10) : p]
            liked = ", ".join(f'"{titles[e[2]]}"' for e in hist if e[3] == 1)
            disliked = ", ".join(f'"{titles[e[2]]}"' for e in hist if e[3] == 0)
            tgt = evs[p]
            split = "test" if p == len(evs) - 1 else "valid" if p == len(evs) - 2 else "train"
            row = {
                "instruction": instruction,
                "input": f"User Preference: {liked}\nUser Unpreference: {disliked}\n"
                f'Whether the user will like the target movie "{titles[tgt[2]]}"?',
                "output": "Yes." if tgt[3] else "No.",
                "task": "tallrec",
                "user_id": u,
                "item_id": tgt[2],
                "label": tgt[3],
                "timestamp": tgt[0],
                "history": [e[2] for e in hist],
            }
            files[split].write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    for f in files.values():
        f.close()
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/llm4rec-bench"))
    ap.add_argument("--sizes", default="1m,20m")
    ap.add_argument("--no-contender", action="store_true", help="skip the Python-loop comparison")
    args = ap.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    results = {}
    # (size, tasks): 1M with the three tasks is the speed target; tallrec on both sizes gives the growth
    runs = [(s, "tallrec,ranking,instructrec") for s in sizes if s == "1m"] + [(s, "tallrec") for s in sizes]
    for size, tasks in runs:
        t0 = time.perf_counter()
        src = synthesize(args.work / f"ml-{size}", SHAPES[size])
        print(f"[{size}] log ready in {time.perf_counter() - t0:.1f} s: {src}", flush=True)
        out = args.work / f"out-{size}"
        subprocess.run(["sync"], check=False)  # earlier runs' dirty pages would compete for the disk
        load = os.getloadavg()[0]
        seconds, cpu, rss, log = run_child(
            ["--src", str(src), "--out", str(out), "--task", tasks, "--split", "loo"]
        )
        bytes_out = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        results[size, tasks] = {"seconds": seconds, "cpu": cpu, "peak_rss_gb": rss}
        print(log.strip())
        print(
            f"[{size}] {tasks} (loo): {seconds:.1f} s wall, {cpu:.1f} s CPU (user+sys, all threads), "
            f"peak RSS {rss:.2f} GB, output {bytes_out / 1e9:.2f} GB; load average before "
            f"{load:.1f}, after {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
            flush=True,
        )
        shutil.rmtree(out, ignore_errors=True)
    if ("1m", "tallrec") in results and ("20m", "tallrec") in results:
        r20, r1 = results["20m", "tallrec"], results["1m", "tallrec"]
        print(
            f"1M -> 20M, tables + tallrec (loo), {SHAPES['20m']['ratings'] / SHAPES['1m']['ratings']:.1f}x "
            f"the ratings: wall x{r20['seconds'] / r1['seconds']:.1f}, CPU x{r20['cpu'] / r1['cpu']:.1f}, "
            f"peak memory x{r20['peak_rss_gb'] / r1['peak_rss_gb']:.1f}"
        )
    if "1m" in sizes and not args.no_contender:
        from llm4rec.data.prep import main as prep_main

        src = args.work / "ml-1m"
        t0, c0 = time.perf_counter(), time.process_time()
        prep_main(["--src", str(src), "--out", str(args.work / "c-polars"), "--task", "tallrec", "--quiet"])
        ours, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        n = python_loop_tallrec(src, args.work / "c-loop")
        loop, loop_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"[1m] tallrec/loo, {n} samples: polars pipeline {ours:.1f} s wall / {ours_cpu:.1f} s CPU, "
            f"Python row loop {loop:.1f} s / {loop_cpu:.1f} s CPU (wall ratio {loop / ours:.1f}x)"
        )
        for d in ("c-polars", "c-loop"):
            shutil.rmtree(args.work / d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
