"""The task a checkpoint was trained on must be the task it is evaluated on.

A Yes/No (TALLRec) adapter asked to rank candidates by their index letters is scored on letters it never
learned to produce, and a ranking adapter asked Yes/No questions answers with letters; either way the
report is a number without a meaning. A training output's task is read from its training data (the file
its ``recipe.yaml`` names), else from the ``task`` its ``llm4rec.json`` records. Zero-shot studies that
mean to cross tasks pass ``--allow-task-mismatch``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError

TASK_NAMES = {"binary": "Yes/No", "ranking": "ranking"}


def sample_task(row: dict[str, Any]) -> str:
    """'ranking' for a sample that carries candidates, else 'binary' (Yes/No)."""
    return "ranking" if row.get("task") == "ranking" or "candidates" in row else "binary"


def file_task(path: str | Path) -> str | None:
    """The task of the first sample of a JSON-lines file (None when it cannot be read); reads one line."""
    from llm4rec.io import text_encoding

    try:
        with open(path, encoding=text_encoding(path)) as f:
            line = next((ln for ln in f if ln.strip()), "")
        row = json.loads(line)
    except (OSError, ValueError):
        return None
    return sample_task(row) if isinstance(row, dict) else None


def trained_task(checkpoint: str | Path) -> tuple[str, str] | None:
    """(task, where it was read) of a training output directory; None for a bare model or when unknown."""
    import yaml

    ckpt = Path(checkpoint)
    try:
        recipe = yaml.safe_load((ckpt / "recipe.yaml").read_text(encoding="utf-8"))
        train_file = Path(recipe["data"]["train"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        train_file = None
    task = file_task(train_file) if train_file is not None else None
    if task is not None:
        return task, str(train_file)
    try:
        record = json.loads((ckpt / "llm4rec.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    task = record.get("task") if isinstance(record, dict) else None
    return (task, str(ckpt / "llm4rec.json")) if task in TASK_NAMES else None


def check_task(checkpoints: list[Path], task: str, data: Path, allow: bool) -> None:
    """Refuse (one line) to evaluate ``task`` samples with a checkpoint trained on the other task."""
    if allow:
        return
    for ckpt in checkpoints:
        found = trained_task(ckpt)
        if found is None or found[0] == task:
            continue
        raise UserError(
            f"--checkpoint: {ckpt} was trained on {TASK_NAMES[found[0]]} samples ({found[1]}), but {data} "
            f"holds {TASK_NAMES[task]} samples; evaluate it on {TASK_NAMES[found[0]]} samples, or pass "
            "--allow-task-mismatch for a zero-shot study"
        )
