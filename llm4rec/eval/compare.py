"""``llm4rec compare REPORT...``: LLM checkpoints and baselines side by side, from their reports.

    llm4rec compare runs/eval-test runs/popular runs/sasrec [--out table.md]

Each argument is a report directory (or its ``report.json``) written by ``llm4rec evaluate`` or
``llm4rec baseline``. The reports must have scored the same sample file (the ``data_sha256`` each
records, and as many of its samples: ``--max-samples``); otherwise nothing is printed but one line
naming the two reports. The table is Markdown:
one row per checkpoint or baseline (two, labelled, for ranking on retrieved pools: retained samples
and all samples), the columns AUC, GAUC, NDCG@1/5/10, HR@K and MRR where the reports have them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4rec.cli import plain
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.eval import registry
from llm4rec.eval import report as rep
from llm4rec.io import read_json_object, write_text_atomic

#: the columns of the comparison (registry names; ``ndcg`` at these cut-offs, ``hr`` at every one)
COLUMNS = ("auc", "gauc", "ndcg", "hr", "mrr")
NDCG_KS = (1, 5, 10)


def read_report(path: Path) -> dict[str, Any]:
    """A report's ``report.json`` (given its directory or the file); errors are one line."""
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no report.json (give a directory written by llm4rec evaluate or baseline)")
    report = read_json_object(file)
    for key in ("data", "checkpoints"):
        if key not in report:
            raise UserError(f"{file}: not an llm4rec report (no {key!r})")
    if "data_sha256" not in report:
        raise UserError(f"{file}: records no data_sha256 (written by an older llm4rec); evaluate it again")
    return report


def check_same_data(reports: Sequence[tuple[Path, dict[str, Any]]]) -> None:
    """Refuse reports computed on different sample files, naming the first two that differ."""
    first_path, first = reports[0]
    for path, r in reports[1:]:
        if (r["data_sha256"], r["n_samples"]) != (first["data_sha256"], first["n_samples"]):
            raise UserError(
                f"reports on different sample files: {first_path} scored {first['data']} "
                f"(sha256 {first['data_sha256'][:12]}, {first['n_samples']} samples), {path} scored {r['data']} "
                f"(sha256 {r['data_sha256'][:12]}, {r['n_samples']} samples)"
            )


def columns(reports: Sequence[dict[str, Any]]) -> list[str]:
    """The metric keys shown: :data:`COLUMNS` present in some report, in registry order."""
    keys = {k for r in reports for c in r["checkpoints"] for k in c["metrics"]}
    shown = []
    for key in registry.table_metrics(keys):
        name, _, k = key.partition("@")
        if name in COLUMNS and (name != "ndcg" or int(k) in NDCG_KS):
            shown.append(key)
    return shown


def _fitted_on(c: dict[str, Any]) -> str:
    b = c.get("baseline")
    if b is None:
        return "LLM checkpoint"
    return f"{Path(b['train']).name} ({b['train_samples']} samples)"


def _seconds(c: dict[str, Any]) -> str:
    b = c.get("baseline")
    score = c.get("scoring", {}).get("seconds", "n/a")
    return f"fit {b['fit_seconds']} + score {score}" if b else f"score {score}"


def table(reports: Sequence[dict[str, Any]]) -> str:
    """The Markdown comparison of every entry of every report."""
    names = columns(reports)
    rows = []
    for r in reports:
        for c in r["checkpoints"]:
            for row in rep.metric_rows([c], names):
                rows.append([*row, _fitted_on(c), _seconds(c)])
    first = reports[0]
    head = [f"data: `{first['data']}` (sha256 `{first['data_sha256'][:12]}`, {first['n_samples']} samples)"]
    pool = first.get("candidates_pool")
    if pool:
        head.append("candidate pools: " + ", ".join(f"{k} {v}" for k, v in pool.items() if k != "sha256"))
    body = rep.table(["model", *names, "fitted on", "seconds"], rows, markdown=True)
    return "\n".join([*head, "", body]) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The ``llm4rec compare`` argument parser."""
    ap = argparse.ArgumentParser(
        prog="llm4rec compare",
        description=plain(__doc__.split("\n\n")[0]),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("reports", nargs="+", type=Path, help="report directories (or report.json files)")
    ap.add_argument("--out", type=Path, help="also write the table to this file")
    return ap


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llm4rec compare``."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    reports = [(p, read_report(p)) for p in args.reports]
    check_same_data(reports)
    text = table([r for _, r in reports])
    if args.out:
        write_text_atomic(args.out, text)
    print(text, end="")
    return 0
