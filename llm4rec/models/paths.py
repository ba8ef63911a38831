"""Where a model is: a local directory or a hub id, decided once before transformers sees the name.

Kept apart from the registry (which imports every family, and with them torch and transformers), so a
recipe's paths are checked before any of those are imported.

The rule (as transformers and the rest of the ecosystem read a model name): an existing directory is
local; so is a name that is explicitly a path (absolute, ``./``, ``../``, ``~``, or whose first component
exists here), and a missing one is an error at once. Any other ``org/name`` is a model hub id, fetched
through ``huggingface_hub`` when the user is online and an error naming ``HF_HUB_OFFLINE`` when not.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from llm4rec.errors import UserError

#: ``org/name`` as the model hub spells repository ids
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: files fetched from the hub to resolve a hub id without its weights (config and tokenizer)
HUB_META_FILES = ("*.json", "*.model", "*.tiktoken", "*.txt", "*.py")


def hub_offline() -> bool:
    """Whether the user switched the model hub off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to
    1/true/yes/on), read when asked rather than when a library was imported."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def is_hub_id(path: str | Path) -> bool:
    """Whether ``path`` names a model on the hub rather than a local directory (see the module docstring)."""
    text = str(path)
    if Path(text).is_dir() or text.startswith(("/", "./", "../", "~", ".")) or not _HUB_ID.match(text):
        return False
    return not Path(text.split("/", 1)[0]).exists()


def require_model_dir(path: str | Path, key: str = "model.path", what: str = "") -> Path:
    """``path`` as a local model directory or a hub id (the user online), else a :class:`UserError`: a
    missing local path says so at once, a hub id while offline names ``HF_HUB_OFFLINE``. Reads nothing."""
    p = Path(path)
    if p.is_dir():
        return p
    suffix = f" ({what})" if what else ""
    if is_hub_id(path):
        if hub_offline():
            raise UserError(
                f"{key}: {path} is not a local directory, and as a model hub id it needs the hub, which is "
                f"off (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE (or set it to 0), or download the model and "
                f"give its directory{suffix}"
            )
        return p
    state = "is a file, not a directory" if p.exists() else "does not exist"
    raise UserError(
        f"{key}: the model directory {path} {state}{suffix}; put the weights there (or fix the path), give "
        "a model hub id (org/name), or build a small test model with `llm4rec tiny-model --family llama "
        "--out DIR`"
    )


def locate_model(path: str | Path, key: str = "model.path", what: str = "") -> Path:
    """The local directory that holds ``path``'s config and tokenizer: ``path`` itself, or for a hub id
    the hub snapshot of those files (no weights; transformers fetches them when the model loads)."""
    p = require_model_dir(path, key, what)
    if p.is_dir():
        return p
    return hub_snapshot(str(path), HUB_META_FILES, key)


def hub_snapshot(repo_id: str, patterns: tuple[str, ...] | None, key: str = "model.path") -> Path:
    """The local snapshot of hub repository ``repo_id`` (only the files matching ``patterns`` when given),
    downloaded by ``huggingface_hub`` where it is not cached yet; a failure is one line naming ``key``."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(patterns) if patterns else None))
    except Exception as exc:  # noqa: BLE001 - network, auth and missing repositories all end here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{key}: cannot fetch {repo_id} from the model hub ({first})") from None
