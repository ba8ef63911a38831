"""The evaluation report: ``report.json``, ``report.md``, per-sample scores and PNG plots in one directory.

Metric values are floats, or a string saying why a metric is undefined (never NaN).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def fmt_value(v: Any, digits: int = 4) -> str:
    """A metric as text: floats with ``digits`` decimals, anything else as is (e.g. 'undefined: ...')."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "undefined" if math.isnan(v) else f"{v:.{digits}f}"
    if v is None:
        return "undefined"
    return str(v)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    """A plain-text (aligned) or Markdown table."""
    cells = [[str(h) for h in header]] + [[fmt_value(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    out = []
    for k, r in enumerate(cells):
        out.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct score threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.float64)
    # one point per distinct score: tied samples cross the threshold together
    last_of_run = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last_of_run]
    fp = (last_of_run + 1) - tp
    pos, neg = y.sum(), len(y) - y.sum()
    tpr = np.r_[0.0, tp / pos] if pos else np.zeros(len(tp) + 1)
    fpr = np.r_[0.0, fp / neg] if neg else np.zeros(len(fp) + 1)
    return fpr, tpr


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, Any]]) -> None:
    """One ROC curve per checkpoint ({name: (fpr, tpr, auc)}) in one PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {fmt_value(auc)})", lw=1.5)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_at_k(path: Path, curves: dict[str, dict[str, list[float]]], ks: Sequence[int]) -> None:
    """NDCG@K and HR@K against K, one line per checkpoint ({name: {"ndcg": [...], "hr": [...]}})."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "ndcg", "NDCG@K"), (axes[1], "hr", "HR@K")):
        for name, c in curves.items():
            ax.plot(list(ks), c[key], marker="o", ms=3, label=name)
        ax.set(xlabel="K", ylabel=title, title=title, ylim=(0, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_scores(path: Path, columns: dict[str, Any]) -> None:
    """Per-sample scores as Parquet (``.parquet``) or JSON lines (``.jsonl``)."""
    import polars as pl

    frame = pl.DataFrame(columns)
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    else:
        with open(path, "w", encoding="utf-8") as f:
            for row in frame.iter_rows(named=True):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def metric_rows(entries: Sequence[dict[str, Any]], metric_names: Sequence[str]) -> list[list[Any]]:
    """One table row per report entry (checkpoint or baseline); an entry scored on retrieved pools gets
    two, labelled: the retained samples, and all samples with the dropped ones counted as misses."""
    rows = []
    for c in entries:
        overall = c.get("overall_metrics")
        label = f"{c['name']}, retained samples" if overall else c["name"]
        rows.append([label] + [c["metrics"].get(m, "n/a") for m in metric_names])
        if overall:
            rows.append(
                [f"{c['name']}, all samples (dropped = miss)"] + [overall.get(m, "n/a") for m in metric_names]
            )
    return rows


def _pool_line(report: dict[str, Any]) -> list[str]:
    pool = report.get("candidates_pool")
    if not pool:
        return []
    what = ", ".join(f"{k} {v}" for k, v in pool.items())
    dropped = report.get("dropped_samples")
    extra = f"; {dropped} samples of this split dropped (target not retrieved)" if dropped is not None else ""
    return [f"- candidate pools: {what}{extra}"]


def markdown(
    report: dict[str, Any], metric_names: Sequence[str], plots: Sequence[str], scores_file: str
) -> str:
    """``report.md``: what was scored, the comparison table, the plots."""
    lines = [
        "# llm4rec evaluation report",
        "",
        f"- data: `{report['data']}` ({report['n_samples']} samples, task: {report['task']})",
        f"- data sha256: `{report.get('data_sha256', 'n/a')}`",
        *_pool_line(report),
        f"- scoring: {report['method']}",
        f"- per-sample scores: `{scores_file}`",
        "",
        "## Metrics",
        "",
    ]
    entries = report["checkpoints"]
    rows = metric_rows(entries, metric_names)
    lines.append(table(["checkpoint", *metric_names], rows, markdown=True))
    baselines = [c for c in entries if "baseline" in c]
    if baselines:
        lines += [
            "",
            "| baseline | fitted on | train events | fit s | score s | parameters |",
            "|---|---|---|---|---|---|",
        ]
        for c in baselines:
            b = c["baseline"]
            lines.append(
                f"| {c['name']} | `{b['train']}` ({b['train_samples']} samples) | {b['train_events']} | "
                f"{b['fit_seconds']} | {c['scoring']['seconds']} | {json.dumps(b['params'])} |"
            )
    checkpoints = [c for c in entries if "truncation" in c]
    if checkpoints:
        lines += [
            "",
            "| checkpoint | path | cutoff | prompts shortened | mean items dropped | skipped | seconds |",
        ]
        lines += ["|---|---|---|---|---|---|---|"]
    for c in checkpoints:
        t = c["truncation"]
        lines.append(
            f"| {c['name']} | `{c['path']}` | {t.get('cutoff_len', 'n/a')} | "
            f"{t.get('shortened', 'n/a')} of {t.get('prompts', 'n/a')} | {t.get('mean_items_dropped', 'n/a')} | "
            f"{t.get('skipped_overlong', 'n/a')} | {c['scoring']['seconds']} |"
        )
    for c in report["checkpoints"]:
        if "permutations" in c:
            from llm4rec.eval.permutations import markdown as permutation_lines

            lines += permutation_lines(c["name"], c["permutations"])
    notes = [f"- {c['name']}: {n}" for c in report["checkpoints"] for n in c.get("notes", [])]
    if notes:
        lines += ["", "## Notes", "", *notes]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


#: the NDCG/HR@K cut-offs a report shows unless --ks says otherwise
DEFAULT_KS = (1, 5, 10, 20)


def add_report_arguments(ap: Any) -> None:
    """The flags every report-writing command shares (``llm4rec evaluate``, ``llm4rec baseline``)."""
    ap.add_argument(
        "--ks", default=",".join(map(str, DEFAULT_KS)), help="cut-offs for NDCG/HR@K (comma list)"
    )
    ap.add_argument(
        "--scores-format",
        choices=("parquet", "jsonl"),
        default="parquet",
        help="per-sample scores file format",
    )


def write_report(
    out: Path,
    report: dict[str, Any],
    metric_names: Sequence[str],
    columns: dict[str, Any],
    roc_curves: dict[str, Any],
    k_curves: dict[str, Any],
    scores_format: str,
) -> None:
    """Write every report file; a directory is replaced atomically, a .json target gets files beside it."""
    import os
    import shutil
    import tempfile

    from llm4rec.io import atomic_dir, disk_full_names, remove_stale_temps, temp_prefix

    scores_file = f"scores.{scores_format}"

    def fill(d: Path, json_name: str) -> None:
        plots = []
        if roc_curves:
            plot_roc(d / "roc.png", roc_curves)
            plots.append("roc.png")
        if k_curves:
            plot_at_k(
                d / "ndcg_hr_at_k.png", k_curves, range(1, 1 + len(next(iter(k_curves.values()))["hr"]))
            )
            plots.append("ndcg_hr_at_k.png")
        write_scores(d / scores_file, columns)
        (d / "report.md").write_text(markdown(report, metric_names, plots, scores_file), encoding="utf-8")
        (d / json_name).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    if out.suffix == ".json":
        # the parent may hold other files: build in a temporary sibling, then move each file in atomically
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out.with_name(out.stem))
        tmp = Path(
            tempfile.mkdtemp(prefix=temp_prefix(out.with_name(out.stem)), suffix=".tmp", dir=out.parent)
        )
        try:
            with disk_full_names(out):
                fill(tmp, out.name)
                for f in tmp.iterdir():
                    os.replace(f, out.parent / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        with atomic_dir(out) as tmp:
            fill(tmp, "report.json")
