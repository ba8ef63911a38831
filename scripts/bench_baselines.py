"""Classic recommenders on real ML-100K, on the very samples the LLM rows of the README are scored on.

    python scripts/bench_baselines.py --ml100k ../shared/data/ml-100k --out bench_baselines_out

Three tables, each from `llm4rec baseline` reports combined by `llm4rec compare`:

1. TALLRec binary (the preset as `make demo-real` preps it: `--history 5 --min-history 10
   --train-samples 256 --seeds 0`): every method fitted on the whole train split and on the 256-sample
   subset `train_n256_s0.jsonl`, scored on the 1000 test samples (AUC, GAUC).
2. K=20 ranking, leave-one-out split, random negative pools (`--task ranking --split loo`).
3. K=20 ranking on pools retrieved by SASRec (`llm4rec baseline --method sasrec --write-candidates`,
   fitted on the train split only), then `--candidates-file`: metrics on the retained samples and over
   all test targets (a dropped target counts as a miss).

Prep runs as a subprocess (the exact `data_prep/movielens.py` commands are printed); every baseline runs
in this process through `llm4rec.baselines.run.main`, so its fit and score times (wall and CPU) come from
one process. Reports are kept under OUT/, the tables are printed and written to OUT/tables.md, the
timings to OUT/timings.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = ("popular", "ease", "als", "sasrec")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ml100k", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k")
    ap.add_argument("--out", type=Path, default=REPO / "bench_baselines_out")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tables", default="binary,random,retrieved", help="which tables to build")
    return ap.parse_args(argv)


def prep(out: Path, *args: str | Path) -> Path:
    """Run data_prep/movielens.py once (kept when its output exists)."""
    if (out / "meta.json").is_file():
        return out
    cmd = [
        sys.executable,
        str(REPO / "data_prep" / "movielens.py"),
        *map(str, args),
        "--out",
        str(out),
        "--quiet",
    ]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    return out


def baseline(out: Path, *args: str | Path) -> dict:
    """Run `llm4rec baseline ARGS --out OUT` in this process (kept when its report exists)."""
    from llm4rec.baselines.run import main

    if not (out / "report.json").is_file():
        argv = [*map(str, args), "--out", str(out)]
        print("$ llm4rec baseline", " ".join(argv), flush=True)
        t0 = time.perf_counter()
        main(argv)
        print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    return json.loads((out / "report.json").read_text())


def table(title: str, reports: list[dict]) -> str:
    from llm4rec.eval.compare import check_same_data
    from llm4rec.eval.compare import table as compare_table

    check_same_data([(Path(r["data"]), r) for r in reports])
    return f"### {title}\n\n" + compare_table(reports)


def timing_rows(reports: list[dict]) -> list[dict]:
    rows = []
    for r in reports:
        for c in r["checkpoints"]:
            b = c["baseline"]
            rows.append(
                {
                    "data": r["data"],
                    "name": c["name"],
                    "train_samples": b["train_samples"],
                    "train_events": b["train_events"],
                    "fit_s": b["fit_seconds"],
                    "fit_cpu_s": b.get("fit_cpu_seconds"),
                    "score_s": c["scoring"]["seconds"],
                    "score_cpu_s": c["scoring"].get("cpu_seconds"),
                    "n_samples": r["n_samples"],
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    which = set(args.tables.split(","))
    out = args.out
    seed = ["--seed", str(args.seed)]
    sections, every = [], []
    if "binary" in which:
        data = prep(
            out / "tallrec_h5",
            "--src", args.ml100k, "--task", "tallrec", "--preset", "tallrec",
            "--history", "5", "--min-history", "10", "--train-samples", "256", "--seeds", "0",
        )  # fmt: skip
        reports = []
        for m in methods:
            reports.append(
                baseline(out / "reports" / f"tallrec-{m}", "--method", m, "--data", data / "tallrec", *seed)
            )
            reports.append(
                baseline(
                    out / "reports" / f"tallrec-{m}-n256",
                    "--method",
                    m,
                    "--data",
                    data / "tallrec",
                    "--train",
                    "train_n256_s0.jsonl",
                    *seed,
                )  # fmt: skip
            )
        sections.append(table("TALLRec binary, ML-100K preset (1000 test samples)", reports))
        every += reports
    loo = None
    if which & {"random", "retrieved"}:
        loo = prep(
            out / "loo", "--src", args.ml100k, "--task", "ranking", "--split", "loo", "--candidates", "20"
        )
    if "random" in which:
        reports = [
            baseline(out / "reports" / f"random-{m}", "--method", m, "--data", loo / "ranking", *seed)
            for m in methods
        ]
        sections.append(table("K=20 ranking, leave-one-out, random negative pools", reports))
        every += reports
    if "retrieved" in which:
        pools = out / "sasrec_pools.jsonl"
        if not pools.is_file():
            baseline_pools = [
                "--method",
                "sasrec",
                "--data",
                loo / "ranking",
                "--write-candidates",
                pools,
                "--k",
                "20",
            ]
            from llm4rec.baselines.run import main as run_baseline

            print("$ llm4rec baseline", " ".join(map(str, [*baseline_pools, *seed])), flush=True)
            run_baseline([*map(str, baseline_pools), *seed])
        data = prep(
            out / "loo_sasrec",
            "--src", args.ml100k, "--task", "ranking", "--split", "loo", "--candidates", "20",
            "--candidates-file", pools,
        )  # fmt: skip
        reports = [
            baseline(out / "reports" / f"retrieved-{m}", "--method", m, "--data", data / "ranking", *seed)
            for m in methods
        ]
        sections.append(table("K=20 ranking, leave-one-out, SASRec-retrieved pools", reports))
        every += reports
    text = "\n".join(sections)
    print(text)
    (out / "tables.md").write_text(text, encoding="utf-8")
    (out / "timings.json").write_text(json.dumps(timing_rows(every), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
