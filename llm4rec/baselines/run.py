"""``llm4rec baseline``: fit a classic recommender on a prepared train split and score the same samples
as ``llm4rec evaluate``, writing the same report (``report.json``, ``report.md``, per-sample scores).

    llm4rec baseline --method sasrec --data data/ml100k/tallrec --out runs/sasrec-tallrec
    llm4rec baseline --method ease --data data/ml100k/tallrec --train train_n256_s0.jsonl --out runs/ease-256
    llm4rec baseline --method sasrec --data data/loo/ranking --write-candidates pools.jsonl --k 20

Each Yes/No sample gets a score for (its history, its target item), each ranking sample a score per
candidate, each next-item sample a ranking of the whole catalogue (its history items excluded). The
model sees the train file's events only (see :mod:`llm4rec.baselines.data`). With
``--write-candidates`` it writes, for every valid and test sample, the top K items its history leads to
(history excluded), in the format of prep's ``--candidates-file``.
"""

from __future__ import annotations

import argparse
import difflib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llm4rec.baselines.data import Catalogue, PrepDir, Samples, read_samples, read_train_log, resolve
from llm4rec.baselines.models import METHODS, Recommender, build
from llm4rec.cli import plain
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.eval import provenance, registry
from llm4rec.eval import report as rep
from llm4rec.io import sha256_file, write_jsonl_atomic

ROWS_PER_BLOCK = 1024  # samples scored at once: bounds the [samples, catalogue] score matrix


def build_parser() -> argparse.ArgumentParser:
    """The ``llm4rec baseline`` argument parser."""
    ap = argparse.ArgumentParser(
        prog="llm4rec baseline",
        description=plain(__doc__.split("\n\n")[0]),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("--method", required=True, help="; ".join(f"{k}: {v}" for k, v in METHODS.items()))
    ap.add_argument("--data", required=True, type=Path, help="prepared task directory (e.g. OUT/tallrec)")
    ap.add_argument("--out", type=Path, help="report directory (required unless --write-candidates)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the model's initialisation")
    ap.add_argument(
        "--train",
        type=Path,
        help="train file to fit on (default DATA/train.jsonl); a bare name is looked up in DATA, e.g.\n"
        "train_n256_s0.jsonl for TALLRec's 256-shot subset of seed 0",
    )
    ap.add_argument("--split", choices=("test", "valid"), default="test", help="which samples to score")
    ap.add_argument(
        "--max-samples", type=int, default=0, help="score only the first N samples (0 = all), as evaluate's"
    )
    ap.add_argument(
        "--feedback",
        choices=("auto", "positive", "all"),
        default="auto",
        help="which events the model learns from and sees in histories: positive (label 1) or all;\n"
        "auto: positive for Yes/No samples (the target is a like), all for ranking and next-item",
    )
    rep.add_report_arguments(ap)
    ap.add_argument(
        "--write-candidates",
        type=Path,
        metavar="FILE",
        help="write the top --k items for every valid and test sample (prep's --candidates-file format)",
    )
    ap.add_argument("--k", type=int, default=20, help="list length of --write-candidates")
    return ap


def _check_method(method: str) -> str:
    if method in METHODS:
        return method
    close = difflib.get_close_matches(method, METHODS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"--method: unknown method {method!r}{hint}; choose one of {', '.join(METHODS)}")


def _train_file(args: argparse.Namespace, prep: PrepDir) -> Path:
    if args.train is None:
        return prep.split_file("train")
    if args.train.is_file():
        return args.train
    if (prep.task_dir / args.train).is_file():
        return prep.task_dir / args.train
    subsets = sorted(p.name for p in prep.task_dir.glob("train_n*.jsonl"))
    raise UserError(
        f"--train: {args.train} not found (nor in {prep.task_dir}; its train subsets: {', '.join(subsets) or 'none'})"
    )


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llm4rec baseline``."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    method = _check_method(args.method)
    ks = registry.parse_ks(args.ks)
    if args.out is None and args.write_candidates is None:
        raise UserError("--out: give a report directory (or --write-candidates FILE)")
    if args.k < 1:
        raise UserError(f"--k: must be positive, got {args.k}")
    prep = resolve(args.data)
    catalogue = Catalogue.read(prep)
    train_file = _train_file(args, prep)
    # every input is read and checked before anything is fitted or written
    if args.max_samples < 0:
        raise UserError(f"--max-samples: must be positive, got {args.max_samples}")
    scored = (
        read_samples(prep.split_file(args.split), prep, catalogue, args.max_samples) if args.out else None
    )
    task = scored.task if scored else read_samples(prep.split_file("test"), prep, catalogue).task
    feedback = args.feedback if args.feedback != "auto" else ("positive" if task == "binary" else "all")
    pools = _candidate_samples(prep, catalogue) if args.write_candidates else []

    log = read_train_log(train_file, prep, catalogue)
    if feedback == "positive":
        log = log.select(log.labels == 1)
    model = build(method)
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(log, args.seed)
    fit_seconds, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    fitted = {
        "method": method,
        "train": str(train_file),
        "train_sha256": sha256_file(train_file),
        "train_samples": log.n_samples,
        "train_events": len(log.items),
        "few_shot": train_file.name != "train.jsonl",
        "feedback": feedback,
        "seed": args.seed,
        "params": model.params(),
        "fit_seconds": round(fit_seconds, 3),
        "fit_cpu_seconds": round(fit_cpu, 3),  # every thread's CPU time: comparable on a loaded machine
    }
    if args.write_candidates:
        n = write_candidates(args.write_candidates, model, pools, catalogue, feedback, args.k, fitted)
        print(f"candidates: {n} lists of {args.k} items -> {args.write_candidates}")
    if scored is not None:
        _report(args, model, scored, catalogue, feedback, ks, fitted)
    return 0


def _profiles(s: Samples, feedback: str) -> list[np.ndarray]:
    """Each sample's history as the model sees it (its liked items only under positive feedback)."""
    if feedback == "all":
        return s.histories
    return [h[lab == 1] for h, lab in zip(s.histories, s.history_labels)]


def score_samples(model: Recommender, s: Samples, feedback: str) -> np.ndarray:
    """Binary: [N] target scores; ranking: [N, K] candidate scores; next-item: [N, items] with each
    sample's history items at -inf (a user does not pick them again)."""
    profiles = _profiles(s, feedback)
    parts = []
    for a in range(0, len(profiles), ROWS_PER_BLOCK):
        full = model.score(profiles[a : a + ROWS_PER_BLOCK])
        rows = np.arange(full.shape[0])
        if s.task == "binary":
            parts.append(full[rows, s.targets[a : a + ROWS_PER_BLOCK]])
        elif s.task == "ranking":
            parts.append(np.take_along_axis(full, s.candidates[a : a + ROWS_PER_BLOCK], axis=1))
        else:
            for r, h in enumerate(s.histories[a : a + ROWS_PER_BLOCK]):
                full[r, h[h != s.targets[a + r]]] = -np.inf
            parts.append(full)
    return np.concatenate(parts)


def _report(
    args: argparse.Namespace,
    model: Recommender,
    s: Samples,
    catalogue: Catalogue,
    feedback: str,
    ks: list[int],
    fitted: dict[str, Any],
) -> None:
    import torch

    t0, c0 = time.perf_counter(), time.process_time()
    scores = score_samples(model, s, feedback)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    name = fitted["method"] + (f" ({Path(fitted['train']).stem})" if fitted["few_shot"] else "")
    columns: dict[str, Any] = {
        "index": list(range(len(s.rows))),
        "user_id": [str(r["user_id"]) for r in s.rows],
        "item_id": [str(r["item_id"]) for r in s.rows],
    }
    roc: dict[str, Any] = {}
    k_curves: dict[str, Any] = {}
    st = torch.from_numpy(scores)
    if s.task == "binary":
        metrics = registry.binary_metrics(st, s.labels, columns["user_id"])
        columns["label"] = s.labels.tolist()
        columns[f"score:{name}"] = scores
        roc[name] = (*rep.roc_points(scores, s.labels), metrics.get("auc"))
        how = "baseline score of (history, target item)"
    else:
        target = s.target_index if s.task == "ranking" else s.targets
        rel = registry.one_hot(target, scores.shape[1])
        metrics = registry.ranking_metrics(st, rel, registry.usable_ks(ks, scores.shape[1]))
        rank = 1 + (scores > scores[np.arange(len(target)), target][:, None]).sum(1)
        columns[f"rank:{name}"] = rank
        if s.task == "ranking":
            columns["target_index"] = target.tolist()
            columns[f"scores:{name}"] = scores.tolist()
            k_curves[name] = registry.at_k_curves(st, rel, range(1, scores.shape[1] + 1))
            how = "baseline score per candidate"
        else:
            top = np.argsort(-scores, axis=1, kind="stable")[:, : max(ks)]
            columns[f"top:{name}"] = [[catalogue.ids[i] for i in row] for row in top]
            k_curves[name] = registry.at_k_curves(st, rel, range(1, max(ks) + 1))
            how = "baseline ranking of the whole catalogue (history items excluded)"
    origin = provenance.describe(s.path)
    entry: dict[str, Any] = {
        "name": name,
        "path": fitted["method"],
        "baseline": fitted,
        "metrics": metrics,
        "scoring": {
            "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 3),
            "samples_per_s": round(len(s.rows) / seconds, 2) if seconds > 0 else None,
        },
        "notes": [
            f"{k.removesuffix('_undefined_reason')}: {v}" for k, v in metrics.items() if k.endswith("_reason")
        ],
    }
    if "dropped_samples" in origin:
        entry["overall_metrics"] = provenance.overall(metrics, origin["dropped_samples"])
    report = {
        "data": str(s.path),
        **origin,
        "n_samples": len(s.rows),
        "task": s.task,
        "method": how,
        "ks": ks,
        "checkpoints": [entry],
    }
    names = registry.table_metrics(metrics)
    rep.write_report(args.out, report, names, columns, roc, k_curves, args.scores_format)
    print(rep.table(["baseline", *names], rep.metric_rows([entry], names)))
    print(f"fit {fitted['fit_seconds']:.1f} s, score {seconds:.2f} s; report: {args.out}")


def _candidate_samples(prep: PrepDir, catalogue: Catalogue) -> list[tuple[str, Samples]]:
    """The valid and test samples whose targets get a candidate list; one sample per user and split."""
    out = []
    for split in ("valid", "test"):
        s = read_samples(prep.split_file(split), prep, catalogue)
        users = [str(r["user_id"]) for r in s.rows]
        if len(set(users)) != len(users):
            raise UserError(
                f"--write-candidates: {s.path} has several samples of one user; a candidates file holds one "
                "list per user and split (prepare with --split loo)"
            )
        out.append((split, s))
    return out


def write_candidates(
    path: Path,
    model: Recommender,
    pools: list[tuple[str, Samples]],
    catalogue: Catalogue,
    feedback: str,
    k: int,
    fitted: dict[str, Any],
) -> int:
    """Write the top ``k`` items of every valid and test sample (history excluded); the number of lists."""
    if k > len(catalogue.ids):
        raise UserError(f"--k: {k} is more than the catalogue's {len(catalogue.ids)} items")
    source = {
        "method": fitted["method"],
        "k": k,
        "seed": fitted["seed"],
        "train_sha256": fitted["train_sha256"],
    }
    lines = []
    for split, s in pools:
        profiles = _profiles(s, feedback)
        for a in range(0, len(profiles), ROWS_PER_BLOCK):
            full = model.score(profiles[a : a + ROWS_PER_BLOCK])
            for r, h in enumerate(s.histories[a : a + ROWS_PER_BLOCK]):
                full[r, h] = -np.inf
            top = np.argsort(-full, axis=1, kind="stable")[:, :k]
            for r, row in enumerate(top):
                user = str(s.rows[a + r]["user_id"])
                lines.append(
                    {
                        "user": user,
                        "split": split,
                        "candidates": [catalogue.ids[i] for i in row],
                        "source": source,
                    }
                )
    return write_jsonl_atomic(path, lines)
