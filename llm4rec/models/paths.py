"""Where a model directory is: the check every command makes before transformers sees a path.

Kept apart from the registry (which imports every family, and with them torch and transformers), so a
recipe's paths are checked before any of those are imported.
"""

from __future__ import annotations

from pathlib import Path

from llm4rec.errors import UserError


def hub_online() -> bool:
    """True when the user explicitly allowed the model hub (``HF_HUB_OFFLINE=0``); llm4rec's default is off."""
    import os

    value = os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", "1"))
    return value.strip().lower() in ("0", "false", "no", "off", "")


def require_model_dir(path: str | Path, key: str = "model.path") -> Path:
    """``path`` as a local model directory, else a :class:`UserError` saying that it does not exist.

    Checked before transformers sees the path, so a typo never turns into hub retries or a "repo id"
    complaint. A hub id passes only when the user switched the hub on (``HF_HUB_OFFLINE=0``).
    """
    p = Path(path)
    if p.is_dir():
        return p
    if hub_online() and not p.is_absolute() and not str(path).startswith(".") and str(path).count("/") == 1:
        return p
    what = "is a file, not a directory" if p.exists() else "does not exist"
    raise UserError(
        f"{key}: the model directory {path} {what}; llm4rec loads local directories only and never "
        "downloads: put the weights there (or fix the path), or build a small test model with "
        "`llm4rec tiny-model --family llama --out DIR`"
    )
