"""``llm4rec evaluate``: score one or more checkpoints on the same JSONL test set and write one report.

    llm4rec evaluate --checkpoint runs/a runs/b --data data/ml100k/tallrec/test.jsonl
    accelerate launch -m llm4rec.eval --checkpoint runs/a --data test.jsonl      # shards across processes

The task follows from the data: Yes/No samples (``label`` or a Yes/No ``output``) get AUC and GAUC by
``user_id``; ranking samples (``candidates`` + ``target_index``) get NDCG/HR@K and MRR, scored by the
index letters (``--rank-method letters``, LlamaRec) or candidate by candidate (``pointwise``). A Yes/No
file with ``--group-by FIELD`` is also ranked within each group (candidates of one user share their
history prefix, computed once).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm4rec.cli import plain
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.eval import permutations, provenance, registry
from llm4rec.eval import report as rep
from llm4rec.eval.scoring import (
    ScoringStats,
    pointwise_samples,
    score_binary,
    score_choices,
    score_pointwise,
)
from llm4rec.eval.task_check import check_task, sample_task
from llm4rec.io import line_numbers, read_jsonl, require_writable

# ------------------------------------------------------------------------------------------------ data


def _line_numbers(path: Path) -> list[int]:
    """File line number of each sample (read_jsonl skips blank lines)."""
    return line_numbers(path)


def detect_task(rows: Sequence[dict[str, Any]]) -> str:
    """'ranking' when samples carry candidates, else 'binary'."""
    return sample_task(rows[0])


def binary_labels(rows: Sequence[dict[str, Any]], answers: Sequence[str], path: Path) -> list[int]:
    """0/1 labels from ``label``, else from ``output`` matching one of the answers; errors name file:line."""
    lines = _line_numbers(path)
    labels = []
    for i, r in enumerate(rows):
        where = f"{path}:{lines[i] if i < len(lines) else i + 1}"
        if "label" in r:
            v = r["label"]
            if isinstance(v, bool) or v in (0, 1, "0", "1"):
                labels.append(int(v))
                continue
            raise UserError(f"{where}: label must be 0 or 1, got {v!r}")
        out = str(r.get("output", "")).strip()
        words = [a.strip() for a in answers]  # answers may carry the template's answer prefix (a space)
        if out in words:
            labels.append(int(out == words[0]))
            continue
        raise UserError(
            f"{where}: sample has no 'label' and its 'output' {out!r} is neither of {words}; "
            "add a 0/1 label field"
        )
    return labels


def ranking_targets(rows: Sequence[dict[str, Any]], path: Path) -> list[int]:
    """Target positions of ranking samples; errors name file:line."""
    lines = _line_numbers(path)
    out = []
    for i, r in enumerate(rows):
        where = f"{path}:{lines[i] if i < len(lines) else i + 1}"
        cands = r.get("candidates")
        if not isinstance(cands, list) or not cands:
            raise UserError(f"{where}: ranking sample lacks a non-empty 'candidates' list")
        t = r.get("target_index")
        if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < len(cands):
            raise UserError(f"{where}: 'target_index' must be an integer in [0, {len(cands)}), got {t!r}")
        out.append(t)
    return out


def _check_fields(rows: Sequence[dict[str, Any]], path: Path, fields: Sequence[str]) -> None:
    lines = _line_numbers(path)
    for i, r in enumerate(rows):
        for f in fields:
            if f not in r:
                raise UserError(
                    f"{path}:{lines[i] if i < len(lines) else i + 1}: sample lacks the field {f!r} "
                    f"(has: {', '.join(r)})"
                )


# ------------------------------------------------------------------------------------------------ metrics


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def group_matrix(
    scores: torch.Tensor, labels: torch.Tensor, groups: Sequence[Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group [G, Kmax] score and relevance matrices from flat Yes/No scores (padding ranks last)."""
    index: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    width = max(len(v) for v in index.values())
    low = float(scores.min()) - 1.0 if scores.numel() else 0.0
    s = torch.full((len(index), width), low, dtype=torch.float32, device=scores.device)
    rel = torch.zeros((len(index), width), dtype=torch.float32, device=scores.device)
    for r, members in enumerate(index.values()):
        idx = torch.tensor(members, device=scores.device)
        s[r, : len(members)] = scores[idx]
        rel[r, : len(members)] = labels[idx].float()
    return s, rel


# ------------------------------------------------------------------------------------------------ main


def _names(paths: Sequence[Path]) -> list[str]:
    """Short distinct names for checkpoints (directory name, with parents added where names clash)."""
    names = [p.name or str(p) for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < 6:
        depth += 1
        names = ["/".join(p.parts[-depth:]) for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n}#{i + 1}" for i, n in enumerate(names)]
    return names


def build_parser() -> argparse.ArgumentParser:
    """The ``llm4rec evaluate`` argument parser."""
    ap = argparse.ArgumentParser(
        prog="llm4rec evaluate",
        description=plain(__doc__.split("\n\n")[0]),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("--checkpoint", nargs="+", required=True, type=Path, help="adapter or model directories")
    ap.add_argument("--data", required=True, type=Path, help="test JSONL (Yes/No or ranking samples)")
    ap.add_argument(
        "--out",
        type=Path,
        help="report directory (default: FIRST_CHECKPOINT/eval-DATASTEM); a path ending in .json names\n"
        "report.json itself and the other files go beside it",
    )
    ap.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="memory scale of a forward pass: about this many whole prompts' tokens (prefix reuse fits more rows)",
    )
    ap.add_argument(
        "--max-batch-tokens",
        type=int,
        default=0,
        help="new (padded) tokens per forward pass (0 = batch size x mean prompt length)",
    )
    ap.add_argument("--max-samples", type=int, default=0, help="score only the first N samples (0 = all)")
    ap.add_argument(
        "--cutoff-len",
        type=int,
        default=0,
        help="prompt token limit (default: the checkpoint recipe's data.cutoff_len; 512 for a bare model)",
    )
    ap.add_argument(
        "--lang",
        choices=("en", "zh"),
        default=None,
        help="prompt and answer language of a bare model (default en; a trained adapter uses its recipe's)",
    )
    ap.add_argument(
        "--skip-overlong",
        action="store_true",
        help="skip (and count) samples whose prompt exceeds the cutoff even with all history dropped\n"
        "(default: such a sample is an error naming its file:line)",
    )
    ap.add_argument(
        "--rank-method",
        choices=("letters", "pointwise"),
        default="letters",
        help="ranking samples: index-letter logits in one pass (LlamaRec), or Yes/No per candidate",
    )
    ap.add_argument("--group-by", help="Yes/No samples: also rank within groups of this field (e.g. user_id)")
    ap.add_argument(
        "--permutations",
        type=int,
        default=0,
        help="letter ranking: also score every sample under N seeded orders of its candidates\n"
        "(each metric's mean and sd, and a position-bias table per letter)",
    )
    ap.add_argument("--permutation-seed", type=int, default=0, help="seed of --permutations' orders")
    rep.add_report_arguments(ap)
    ap.add_argument(
        "--allow-task-mismatch",
        action="store_true",
        help="score samples of the other task than a checkpoint was trained on (zero-shot studies)",
    )
    ap.add_argument(
        "--no-4bit", action="store_true", help="load the base unquantized even if trained in 4-bit"
    )
    ap.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar while scoring (default: on when stderr is a terminal)",
    )
    return ap


def _positive(value: int, name: str) -> None:
    if value < 0 or (name == "--batch-size" and value == 0):
        raise UserError(f"{name}: must be positive, got {value}")


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llm4rec evaluate`` (and ``python -m llm4rec.eval``)."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    ks = _check_args(args)
    out_dir = args.out or args.checkpoint[0] / f"eval-{args.data.stem}"
    require_writable(out_dir, "--out", replace=True)  # before any model loads

    from accelerate import PartialState
    from transformers.utils import logging as hf_logging

    if not args.progress:
        hf_logging.disable_progress_bar()  # one line per event on the terminal; --progress shows the bars

    state = PartialState(cpu=not torch.cuda.is_available())
    backbones = _backbones(args, state.device)
    s = _read_samples(args, backbones)
    check_task(args.checkpoint, s.task, args.data, args.allow_task_mismatch)
    permutations.check(s.task, args.rank_method, args.permutations)
    results = []
    columns: dict[str, Any] = {"index": s.kept}
    for key in ("user_id", "item_id"):
        if all(key in r for r in s.rows):
            columns[key] = [r[key] for r in s.rows]
    curves: dict[str, dict[str, Any]] = {"roc": {}, "k": {}}
    method = ""
    for ckpt, name, bb in zip(args.checkpoint, _names(args.checkpoint), backbones):
        result, method = _evaluate_checkpoint(args, s, ckpt, bb, name, state, ks, columns, curves)
        results.append(result)
        gc.collect()
        if state.device.type == "cuda":
            torch.cuda.empty_cache()

    if not state.is_main_process:
        return 0
    task = s.task
    origin = provenance.describe(args.data)
    if "dropped_samples" in origin and not args.max_samples:
        for r in results:
            r["overall_metrics"] = provenance.overall(r["metrics"], origin["dropped_samples"])
    report = {
        "data": str(args.data),
        **origin,
        "n_samples": len(s.rows),
        "task": task if not (task == "binary" and args.group_by) else f"binary, ranked by {args.group_by}",
        "method": method,
        "ks": ks,
        "checkpoints": results,
    }
    metric_names = registry.table_metrics(k for r in results for k in r["metrics"])
    rep.write_report(out_dir, report, metric_names, columns, curves["roc"], curves["k"], args.scores_format)
    _print_summary(report, metric_names, task)
    print(f"report: {out_dir}")
    return 0


def _check_args(args: argparse.Namespace) -> list[int]:
    """Validate the flags that need no data or model; return the sorted cut-offs of --ks."""
    for name in ("batch_size", "max_batch_tokens", "max_samples", "cutoff_len"):
        _positive(getattr(args, name), "--" + name.replace("_", "-"))
    ks = registry.parse_ks(args.ks)
    for ckpt in args.checkpoint:
        if not ckpt.is_dir():
            what = "is a file, not a directory" if ckpt.exists() else "does not exist"
            raise UserError(f"--checkpoint: {ckpt} {what} (checkpoint directory not found)")
    if args.progress is None:
        args.progress = sys.stderr.isatty()
    return ks


@dataclass
class _Samples:
    """The test rows to score (after --max-samples and --skip-overlong) and where each came from."""

    rows: list[dict[str, Any]]
    sources: list[str]
    targets: list[int] | None
    kept: list[int]
    task: str
    n_total: int


def _backbones(args: argparse.Namespace, device: torch.device) -> list[Any]:
    """Each checkpoint's backbone, resolved once (tokenizer, template, answers, cutoff; no weights)."""
    from llm4rec.models.backbone import resolve_backbone

    return [
        resolve_backbone(
            ckpt,
            cutoff_len=args.cutoff_len,
            lang=args.lang,
            device=device,
            load_in_4bit=False if args.no_4bit else None,
        )
        for ckpt in args.checkpoint
    ]


def _read_samples(args: argparse.Namespace, backbones: Sequence[Any]) -> _Samples:
    """Read --data and check every field the task needs, before any model is loaded."""
    rows = read_jsonl(args.data)
    if args.max_samples:
        rows = rows[: args.max_samples]
    n_total = len(rows)
    task = detect_task(rows)
    _check_fields(rows, args.data, ("instruction", "input"))
    targets = ranking_targets(rows, args.data) if task == "ranking" else None
    if task == "ranking" and args.rank_method == "pointwise":
        pointwise_samples(rows)  # fails before loading any model when the fields are missing
    if task == "binary":
        # fail before loading any model; the exact answer words come with the checkpoint
        from llm4rec.models.templates import ANSWERS

        binary_labels(rows, [a for pair in ANSWERS.values() for a in pair], args.data)  # values unused
    if args.group_by and task == "binary":
        _check_fields(rows, args.data, (args.group_by,))
    sources = [f"{args.data}:{n}" for n in line_numbers(args.data)[: len(rows)]]
    kept = list(range(len(rows)))
    if args.skip_overlong:
        kept = _fitting(args, rows, sources, task, backbones)
        if not kept:
            raise UserError(f"{args.data}: every sample is over the cutoff even without history")
        rows = [rows[i] for i in kept]
        sources = [sources[i] for i in kept]
        targets = [targets[i] for i in kept] if targets is not None else None
    return _Samples(rows, sources, targets, kept, task, n_total)


def _evaluate_checkpoint(
    args: argparse.Namespace,
    s: _Samples,
    ckpt: Path,
    backbone: Any,
    name: str,
    state: Any,
    ks: list[int],
    columns: dict[str, Any],
    curves: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any], str]:
    """Load one checkpoint's model, score the samples, add its columns and curves; its report entry and
    method."""
    device = state.device
    model = backbone.load_model(device)
    cutoff = backbone.cutoff_len
    stats = ScoringStats()
    stats.truncation.skipped = s.n_total - len(s.kept)
    common = dict(
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens or None,
        stats=stats,
        progress=args.progress and state.is_local_main_process,
        distributed=True,
    )
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        scores, labels, groups, method = _score(args, s, model, backbone, common)
    _sync(device)
    seconds = time.perf_counter() - t0
    metrics = _checkpoint_metrics(s, name, scores, labels, groups, args.group_by, ks, columns, curves)
    if args.permutations:
        with torch.no_grad():
            permuted = permutations.evaluate(
                s.rows,
                lambda rows: _score(args, replace(s, rows=rows), model, backbone, common)[0],
                args.permutations,
                args.permutation_seed,
                ks,
            )
    notes = [
        f"{k.removesuffix('_undefined_reason')}: {v}" for k, v in metrics.items() if k.endswith("_reason")
    ]
    trunc = stats.truncation
    warning = trunc.warning(f"{name} on {args.data}", cutoff)
    if warning:
        notes.append(warning.removeprefix("warning: "))
        if state.is_main_process:
            print(warning)
    counts = [stats.tokens_run, stats.unique_tokens, stats.prompt_tokens]
    if state.num_processes > 1:  # every process scored its shard: report the totals
        t = torch.tensor(counts, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        counts = [int(x) for x in t.tolist()]
    result = {
        "name": name,
        "path": str(ckpt),
        "family": backbone.family.name,
        "template": backbone.template.name,
        "answers": list(backbone.answers),
        "metrics": metrics,
        "scoring": {
            "seconds": round(seconds, 3),
            "samples_per_s": round(len(s.rows) / seconds, 2) if seconds > 0 else None,
            "tokens_run": counts[0],
            "unique_prompt_tokens": counts[1],
            "prompt_tokens": counts[2],
            "shared_prefix_tokens": stats.shared_prefix_tokens,
            "cutoff_len": cutoff,
            "fast_path": stats.fast_path,
            "processes": state.num_processes,
            "device": str(device),
        },
        "truncation": {"cutoff_len": cutoff, **trunc.as_dict()},
        "notes": notes,
    }
    if args.permutations:
        result["permutations"] = permuted
    return result, method


def _score(
    args: argparse.Namespace, s: _Samples, model: Any, backbone: Any, common: dict[str, Any]
) -> tuple[torch.Tensor, list[int] | None, list[str] | None, str]:
    """Scores of the samples as the task and --rank-method say; labels and groups of a binary task."""
    rows, sources = s.rows, s.sources
    labels = groups = None
    if s.task == "binary":
        labels = binary_labels(rows, backbone.answers, args.data)
        if args.group_by:
            groups = [json.dumps(r[args.group_by]) for r in rows]
            scores = score_pointwise(model, backbone, rows, groups, sources=sources, **common)
            return (
                scores,
                labels,
                groups,
                "pointwise Yes/No, shared prefix and per-group prefixes computed once",
            )
        scores = score_binary(model, backbone, rows, sources=sources, **common)
        return scores, labels, groups, "Yes/No first-token probability, shared prefix computed once"
    if args.rank_method == "letters":
        scores = score_choices(model, backbone, rows, sources=sources, **common)
        return (
            scores,
            None,
            None,
            "listwise: index-letter probabilities in one pass per sample (LlamaRec verbalizer)",
        )
    flat, owner, counts = pointwise_samples(rows)
    p = score_pointwise(model, backbone, flat, owner, sources=[sources[o] for o in owner], **common)
    scores = torch.full((len(rows), max(counts)), -1.0, device=p.device)
    col = torch.tensor([j for c in counts for j in range(c)], device=p.device)
    scores[torch.tensor(owner, device=p.device), col] = p
    return scores, None, None, "pointwise: Yes/No per candidate, each user's history computed once"


def _checkpoint_metrics(
    s: _Samples,
    name: str,
    scores: torch.Tensor,
    labels: list[int] | None,
    groups: list[str] | None,
    group_by: str | None,
    ks: list[int],
    columns: dict[str, Any],
    curves: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One checkpoint's metrics; its score columns and curves are added to ``columns`` and ``curves``."""
    if s.task == "binary":
        lab = torch.tensor(labels, device=scores.device)
        user = [r["user_id"] for r in s.rows] if "user_id" in columns else None
        metrics = registry.binary_metrics(scores, lab, user)
        if group_by:
            smat, rel = group_matrix(scores, lab, groups)
            kk = registry.usable_ks(ks, smat.shape[1])
            metrics.update(registry.ranking_metrics(smat, rel, kk, registry.GROUPED_RANKING))
            metrics.pop("n_queries")
        columns["label"] = labels
        columns[f"score:{name}"] = scores.float().cpu().numpy()
        curves["roc"][name] = (
            *rep.roc_points(scores.float().cpu().numpy(), np.array(labels)),
            metrics.get("auc"),
        )
        return metrics
    tgt = torch.tensor(s.targets, device=scores.device)
    rel = registry.one_hot(tgt, scores.shape[1])
    metrics = registry.ranking_metrics(scores, rel, registry.usable_ks(ks, scores.shape[1]))
    curves["k"][name] = registry.at_k_curves(scores, rel, range(1, scores.shape[1] + 1))
    columns["target_index"] = s.targets
    columns[f"scores:{name}"] = scores.float().cpu().numpy().tolist()
    columns[f"rank:{name}"] = (1 + (scores > scores.gather(1, tgt[:, None])).sum(1)).cpu().numpy()
    return metrics


def _fitting(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    sources: list[str],
    task: str,
    backbones: Sequence[Any],
) -> list[int]:
    """Indices of the samples whose prompts fit every checkpoint's cutoff (history may still be dropped);
    tokenizers only, before any model loads."""
    from llm4rec.data.tokenize import OverlongPrompt

    if task == "ranking" and args.rank_method == "pointwise":
        flat, owner, _ = pointwise_samples(rows)
    else:
        flat, owner = rows, list(range(len(rows)))
    bad: set[int] = set()
    for bb in backbones:
        for sample, i in zip(flat, owner):
            if i in bad:
                continue
            try:
                bb.encode_prompt(sample, sources[i])
            except OverlongPrompt:
                bad.add(i)
    return [i for i in range(len(rows)) if i not in bad]


def _print_summary(report: dict[str, Any], metric_names: list[str], task: str) -> None:
    ckpts = report["checkpoints"]
    rows = [
        [c["name"]] + [c["metrics"].get(m, "n/a") for m in metric_names] + [c["scoring"]["seconds"]]
        for c in ckpts
    ]
    print(rep.table(["checkpoint", *metric_names, "seconds"], rows))
    if len(ckpts) != 1:
        return
    m = ckpts[0]["metrics"]
    if task == "binary":
        reason = m.get("auc_undefined_reason")
        print(f"test AUC: {rep.fmt_value(m.get('auc'))}" + (f" ({reason})" if reason else ""))
    else:
        ks = sorted(int(k[5:]) for k in m if k.startswith("ndcg@"))
        k = 10 if 10 in ks else ks[-1]
        print(f"test NDCG@{k}: {rep.fmt_value(m[f'ndcg@{k}'])}  HR@{k}: {rep.fmt_value(m[f'hr@{k}'])}")
