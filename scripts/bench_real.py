"""TALLRec's few-shot table at small scale, on real data: a real pretrained LLM on real ML-100K.

    make real-model                                   # models/smollm2-135m-instruct (SmolLM2-135M-Instruct)
    python scripts/bench_real.py --ml100k ../shared/data/ml-100k --out bench_real_out

Rows, all scored on the same TALLRec-preset test split (1000 samples unless --test-limit):
  - item rate: the target item's positive rate in the 8000-sample train split (global rate if unseen)
  - user + item rate: the user's positive rate plus the item's (the preset's test users never appear
    in its train split, so this ranks like the item rate; kept to show it)
  - zero-shot: the base model, no adapter
  - LoRA n-shot, seed s: an adapter trained by llm4rec's train loop on TALLRec's few-shot subset of n
    train samples (data_prep's `--train-samples n --seeds s`), the best validation-AUC step kept

Training goes through ``llm4rec.train.loop.train`` with ``recipes/tallrec_ml100k_smollm2.yaml`` plus overrides,
scoring through ``llm4rec.eval.scoring.score_binary`` and ``llm4rec.eval.metrics`` (what `llm4rec
evaluate` runs). Every run's result is kept in OUT/runs/*.json, so an interrupted or reduced run
resumes, and a later run with more seeds or shots only does the missing work. The table is printed and
written to OUT/bench_real.json, the plot to OUT/bench_real.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m-instruct")
    ap.add_argument("--ml100k", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k")
    ap.add_argument("--out", type=Path, default=REPO / "bench_real_out")
    ap.add_argument("--history", type=int, default=5, help="history items shown per prompt (TALLRec: 10)")
    ap.add_argument(
        "--shots", default="16,64,256", help="few-shot train sizes ('' = baselines and zero-shot only)"
    )
    ap.add_argument("--seeds", default="0,1", help="few-shot subset seeds (also the training seeds)")
    ap.add_argument("--test-limit", type=int, default=0, help="score the first N test samples (0 = all)")
    ap.add_argument("--valid-limit", type=int, default=200, help="validation samples for step selection")
    ap.add_argument(
        "--epochs",
        default="16:8,64:4,256:4",
        help="epochs per shot size, SHOTS:EPOCHS pairs (TALLRec's few-shot runs use many epochs and "
        "early stopping; fewer here for a 2-core CPU)",
    )
    ap.add_argument("--lr", default="0.001", help="learning rate (written as a decimal)")
    ap.add_argument("--targets", default="all", help="LoRA targets (qv: TALLRec's; all: every linear layer)")
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = 2 x rank)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--template", default="auto", help="prompt template (auto: the model's recorded one)")
    ap.add_argument("--load-in-4bit", action="store_true", help="QLoRA: 4-bit base (slower on CPU)")
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--skip-zero-shot", action="store_true")
    return ap.parse_args(argv)


def prepare_data(args: argparse.Namespace, shots: list[int], seeds: list[int]) -> Path:
    """The TALLRec preset with few-shot subsets (data_prep/movielens.py; same targets at any --history)."""
    data = args.out / f"data_h{args.history}"
    split = data / "tallrec"
    need = [split / f"train_n{n}_s{s}.jsonl" for n in shots for s in seeds] + [split / "test.jsonl"]
    if all(p.is_file() for p in need):
        return split
    cmd = [
        sys.executable,
        str(REPO / "data_prep" / "movielens.py"),
        "--src",
        str(args.ml100k),
        "--out",
        str(data),
        "--task",
        "tallrec",
        "--preset",
        "tallrec",
        "--history",
        str(args.history),
        "--min-history",
        "10",  # TALLRec's positions: every target has 10 earlier events, whatever is shown
        "--quiet",
    ]
    if shots:
        cmd += ["--train-samples", ",".join(map(str, shots)), "--seeds", ",".join(map(str, seeds))]
    subprocess.run(cmd, check=True)
    return split


def baselines(train: list[dict], test: list[dict]) -> dict[str, list[float]]:
    """Scores of the two count baselines: item positive rate, and user rate + item rate (train split)."""
    glob = sum(int(r["label"]) for r in train) / len(train)

    def rates(key: str) -> dict[str, float]:
        pos: dict[str, int] = {}
        cnt: dict[str, int] = {}
        for r in train:
            pos[r[key]] = pos.get(r[key], 0) + int(r["label"])
            cnt[r[key]] = cnt.get(r[key], 0) + 1
        return {k: pos[k] / cnt[k] for k in cnt}

    item, user = rates("item_id"), rates("user_id")
    item_s = [item.get(r["item_id"], glob) for r in test]
    user_s = [user.get(r["user_id"], glob) + item.get(r["item_id"], glob) for r in test]
    return {"item rate (train)": item_s, "user + item rate (train)": user_s}


def metrics(scores, test: list[dict]) -> dict[str, float | None]:
    """AUC and GAUC (by user) with llm4rec's metrics."""
    from llm4rec.eval.metrics import auc, gauc

    labels = [int(r["label"]) for r in test]
    g = gauc(scores, labels, [r["user_id"] for r in test])
    return {"auc": float(auc(scores, labels)), "gauc": g.gauc, "n": len(test)}


def score_checkpoint(path: Path, test: list[dict], batch: int, template: str = "auto") -> tuple[dict, float]:
    """Score ``test`` with a model or adapter directory exactly as `llm4rec evaluate` loads and scores it.

    ``template`` (not ``auto``) replaces a base model's recorded template, as a recipe's would.
    """
    import torch

    from llm4rec.eval.scoring import score_binary
    from llm4rec.models.backbone import resolve_backbone

    b = resolve_backbone(path, load_in_4bit=False, cutoff_len=512, template=template)
    model = b.load_model()
    t0 = time.perf_counter()
    with torch.no_grad():
        s = score_binary(model, b, test, batch_size=batch)
    sec = time.perf_counter() - t0
    m = metrics(s.float().cpu(), test)
    m["template"] = b.template.name
    return m, sec


def train_adapter(args: argparse.Namespace, split: Path, n: int, seed: int, epochs: float, out: Path) -> dict:
    """One few-shot LoRA run through llm4rec's own train loop."""
    from llm4rec.config import load_recipe
    from llm4rec.train.loop import train

    overrides = [
        f"model.path={args.model}",
        f"model.template={args.template}",
        f"model.load_in_4bit={'true' if args.load_in_4bit else 'false'}",
        "model.gradient_checkpointing=false",
        "model.attn_implementation=sdpa",
        f"data.train={split / f'train_n{n}_s{seed}.jsonl'}",
        f"data.valid={split / 'valid.jsonl'}",
        f"data.max_valid_samples={args.valid_limit}",
        f"train.output_dir={out}",
        f"train.epochs={epochs}",
        f"train.batch_size={min(args.batch_size, n)}",
        f"train.micro_batch_size={min(args.micro_batch, n)}",
        f"train.learning_rate={args.lr}",
        f"lora.targets={args.targets}",
        f"lora.r={args.rank}",
        f"lora.alpha={2 * args.rank}",
        f"train.warmup_steps={args.warmup}",
        "train.eval_every=0",  # once per epoch
        "train.early_stopping_patience=0",
        f"train.seed={seed}",
        "train.resume=never",
        f"eval.batch_size={args.eval_batch}",
        "logging.progress_bar=false",
    ]
    recipe = load_recipe(REPO / "recipes" / "tallrec_ml100k_smollm2.yaml", overrides)
    return train(recipe)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """AUC against the number of training samples, one point per seed, with reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    lora = [r for r in rows if r["kind"] == "lora"]
    shots = sorted({r["shots"] for r in lora})
    for n in shots:
        aucs = [r["auc"] for r in lora if r["shots"] == n]
        ax.scatter([n] * len(aucs), aucs, color="C0", alpha=0.6)
    if shots:
        means = [
            sum(r["auc"] for r in lora if r["shots"] == n) / sum(1 for r in lora if r["shots"] == n)
            for n in shots
        ]
        ax.plot(shots, means, "-o", color="C0", label="LoRA, mean over seeds")
    styles = {
        "zero-shot": ("C3", "--"),
        "item rate (train)": ("C2", ":"),
        "user + item rate (train)": ("C1", "-."),
    }
    for r in rows:
        if r["kind"] != "lora" and r["name"] in styles:
            c, ls = styles[r["name"]]
            ax.axhline(r["auc"], color=c, ls=ls, label=f"{r['name']} ({r['auc']:.3f})")
    ax.axhline(0.5, color="grey", lw=0.5)
    if shots:
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(n) for n in shots])
    ax.set_xlabel("training samples (TALLRec few-shot subsets)")
    ax.set_ylabel("test AUC")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    from llm4rec.io import read_jsonl, write_json_atomic

    hf_logging.disable_progress_bar()
    if not (args.model / "config.json").is_file():
        print(f"error: {args.model}: no model directory; run `make real-model` first", file=sys.stderr)
        return 2
    shots, seeds = _ints(args.shots), _ints(args.seeds)
    epochs = {int(k): float(v) for k, v in (p.split(":") for p in args.epochs.split(","))}
    split = prepare_data(args, shots, seeds)
    train_rows = read_jsonl(split / "train.jsonl")
    test = read_jsonl(split / "test.jsonl")
    if args.test_limit:
        test = test[: args.test_limit]
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    tag = f"h{args.history}_t{len(test)}"
    t_start = time.perf_counter()
    rows: list[dict] = []
    for name, s in baselines(train_rows, test).items():
        rows.append({"name": name, "kind": "baseline", **metrics(s, test)})

    def cached(key: str, fn) -> dict:
        p = runs / f"{key}.json"
        if p.is_file():
            return json.loads(p.read_text())
        rec = fn()
        write_json_atomic(p, rec)
        return rec

    if not args.skip_zero_shot:

        def zero() -> dict:
            m, sec = score_checkpoint(args.model, test, args.eval_batch, args.template)
            return {"name": "zero-shot", "kind": "zero-shot", **m, "score_s": round(sec, 1)}

        rows.append(cached(f"zero_{args.template}_{tag}", zero))
        print(f"zero-shot: AUC {rows[-1]['auc']:.4f} ({rows[-1]['score_s']} s)", flush=True)
    lr_tag = args.lr.replace(".", "p")
    for n in shots:
        for seed in seeds:
            lora_tag = "" if (args.targets, args.rank) == ("qv", 8) else f"_{args.targets}{args.rank}"
            key = f"lora_n{n}_s{seed}_e{epochs[n]:g}_lr{lr_tag}{lora_tag}_{args.template}_{tag}"

            def run(n=n, seed=seed, key=key) -> dict:
                out = args.out / "adapters" / key
                summary = train_adapter(args, split, n, seed, epochs[n], out)
                m, sec = score_checkpoint(out, test, args.eval_batch)
                return {
                    "name": f"LoRA {n}-shot seed {seed}",
                    "kind": "lora",
                    "shots": n,
                    "seed": seed,
                    "epochs": epochs[n],
                    **m,
                    "best_valid_auc": summary["best_valid_auc"],
                    "best_step": summary["best_step"],
                    "train_s": summary["train_seconds"],
                    "score_s": round(sec, 1),
                }

            rows.append(cached(key, run))
            r = rows[-1]
            print(
                f"{r['name']}: AUC {r['auc']:.4f} GAUC {r['gauc']:.4f} (valid {r['best_valid_auc']}, "
                f"train {r['train_s']} s, score {r['score_s']} s)",
                flush=True,
            )

    # mean rows per shot size
    summary_rows = [r for r in rows if r["kind"] != "lora"]
    for n in shots:
        rs = [r for r in rows if r["kind"] == "lora" and r["shots"] == n]
        if rs:
            aucs = [r["auc"] for r in rs]
            gaucs = [r["gauc"] for r in rs if r["gauc"] is not None]
            summary_rows.append(
                {
                    "name": f"LoRA {n}-shot (mean of {len(rs)} seeds)",
                    "kind": "lora-mean",
                    "shots": n,
                    "auc": sum(aucs) / len(aucs),
                    "auc_min": min(aucs),
                    "auc_max": max(aucs),
                    "gauc": sum(gaucs) / len(gaucs) if gaucs else None,
                    "n": len(test),
                }
            )
    width = max(len(r["name"]) for r in summary_rows)
    print(f"\n{'model':<{width}}  {'test AUC':>8}  {'GAUC':>6}  seeds' AUC range")
    for r in summary_rows:
        rng = f"{r['auc_min']:.4f}-{r['auc_max']:.4f}" if "auc_min" in r else ""
        g = f"{r['gauc']:.4f}" if r.get("gauc") is not None else "   -  "
        print(f"{r['name']:<{width}}  {r['auc']:>8.4f}  {g:>6}  {rng}")
    report = {
        "model": str(args.model),
        "test_samples": len(test),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "table": summary_rows,
        "runs": [r for r in rows if r["kind"] == "lora"],
        "seconds_this_invocation": round(time.perf_counter() - t_start, 1),
    }
    write_json_atomic(args.out / "bench_real.json", report)
    plot(
        rows,
        args.out / "bench_real.png",
        f"{args.model.name}, ML-100K TALLRec preset, {len(test)} test samples",
    )
    print(f"\nwrote {args.out / 'bench_real.json'} and {args.out / 'bench_real.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
