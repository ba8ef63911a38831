"""What shapes a training run, recorded in ``checkpoint-last/fingerprint.json`` and compared on resume.

A resumed run continues the optimizer, schedule, data order and adapter of the run that wrote the
checkpoint. Resuming with another learning rate, LoRA rank, data file or base model would mix two runs
into one output (steps on the old schedule, an adapter of the old rank) and say nothing; so every resolved
recipe key is part of the fingerprint except the few in :data:`SAFE_TO_CHANGE`, and so are the contents of
the data files (sha256), the base model (sha256 of its config and of samples of its weight files) and the
number of processes. Resuming with any of them changed is one :class:`~llm4rec.errors.UserError` naming
the changed keys, both values and the two ways out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from llm4rec.config import Recipe, describe
from llm4rec.errors import UserError, quote
from llm4rec.io import sha256_file, write_json_atomic

FILE_NAME = "fingerprint.json"

#: recipe keys that may change between a run and its resumption: they decide what is logged, how often
#: validation and checkpoints happen, where the run is, and how memory is planned, never the steps taken
#: (a data file or the base model may move: their contents are compared instead of their paths)
SAFE_TO_CHANGE = (
    "logging.",
    "train.eval_every",
    "train.save_every",
    "train.resume",
    "train.output_dir",
    "train.auto_memory_gb",
    "eval.batch_size",
    "model.gradient_checkpointing",
    "model.arch",
    "model.path",
    "data.train",
    "data.valid",
)

#: bytes read from the middle of each weight file for the model's fingerprint
_SAMPLE = 1 << 20


def _safe(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in SAFE_TO_CHANGE)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, computed once per (path, size, mtime): checkpoints are saved many times a run."""
    return sha256_file(Path(path))


def _content(path: str) -> str:
    st = os.stat(path)
    return _file_sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def model_digest(model_dir: str | os.PathLike[str], config: dict[str, Any] | None = None) -> str:
    """sha256 over the model's ``config`` (its config.json as the backbone read it; read here when not
    given) and, for each weight
    file of ``model_dir``, its name, size, first
    ``_SAMPLE`` bytes (a safetensors header names every tensor and shape) and ``_SAMPLE`` bytes from its
    middle: another checkpoint of the same architecture differs there, and no 14 GB file is read whole."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    if config is None:
        cfg = model_dir / "config.json"
        config = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else {}
    h.update(json.dumps(config, sort_keys=True).encode())
    weights = sorted(
        p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".gguf") and p.is_file()
    )
    for p in weights:
        size = p.stat().st_size
        h.update(f"{p.name}:{size}".encode())
        with open(p, "rb") as f:
            h.update(f.read(_SAMPLE))
            f.seek(max(0, size // 2 - _SAMPLE // 2))
            h.update(f.read(_SAMPLE))
    return h.hexdigest()


def fingerprint(recipe: Recipe, processes: int, model_config: dict[str, Any]) -> dict[str, Any]:
    """Every key that shapes the run, with its resolved value (see the module docstring); ``model_config``
    is the base model's config.json as the run's backbone read it."""
    data = recipe.to_dict()
    fp: dict[str, Any] = {}
    for key, _, _ in describe():
        if _safe(key):
            continue
        value: Any = data
        for part in key.split("."):
            value = value[part]
        fp[key] = value
    for key in ("train", "valid"):
        path = getattr(recipe.data, key)
        if path:
            fp[f"data.{key} (sha256 of its content)"] = _content(path)
    if Path(recipe.model.path).is_dir():
        fp["model.path (sha256 of config and weights)"] = model_digest(recipe.model.path, model_config)
    fp["processes"] = processes
    return fp


def write_fingerprint(
    checkpoint_dir: str | os.PathLike[str], recipe: Recipe, processes: int, model_config: dict[str, Any]
) -> None:
    """Record the run's fingerprint in a checkpoint directory being written."""
    write_json_atomic(Path(checkpoint_dir) / FILE_NAME, fingerprint(recipe, processes, model_config))


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a digest
    return quote(value, 60)


def check_resume(
    recipe: Recipe, checkpoint_dir: Path | None, processes: int, model_config: dict[str, Any]
) -> None:
    """Refuse to resume from ``checkpoint_dir`` (if any) when the run it belongs to had other settings."""
    if checkpoint_dir is None:
        return
    path = Path(checkpoint_dir) / FILE_NAME
    ways_out = f"set train.resume: never to start over in {recipe.train.output_dir}, or choose a new train.output_dir"
    if not path.is_file():
        raise UserError(
            f"train.resume: {checkpoint_dir} records no {FILE_NAME} (written by an older llm4rec), so its "
            f"settings cannot be checked; {ways_out}"
        )
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{path}: damaged (not JSON); {ways_out}") from None
    now = fingerprint(recipe, processes, model_config)
    changed = [
        f"{k}: {_short(before.get(k, '(unset)'))} -> {_short(now.get(k, '(unset)'))}"
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
    ]
    if changed:
        raise UserError(
            f"train.resume: {checkpoint_dir} belongs to a run with other settings ({'; '.join(changed)}); "
            f"resuming would mix two runs: {ways_out}"
        )
