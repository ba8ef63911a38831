"""Weights checked before use: a damaged safetensors file, or an adapter of another base, is one line.

safetensors' own errors on a truncated file (``SafetensorError: ... incomplete metadata``) and peft's on an
adapter of another base (a size-mismatch report of every layer) reach the user as tracebacks. The checks
here read only headers (the first bytes of a file) and module shapes, so they cost nothing next to loading:

* :func:`check_safetensors` — the 8-byte header length, the JSON header, and that the tensors it lists fit
  the file exactly (the format puts them back to back after the header);
* :func:`check_model_dir` — every ``*.safetensors`` of a model directory, and the shards its index names;
* :func:`check_adapter_dir` — the adapter file, then each LoRA matrix against the base module it adapts,
  and the base the adapter records (``base_model_name_or_path``) against the base being loaded.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError

#: bytes per element of the safetensors dtypes (sub-byte types are not size-checked)
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}  # fmt: skip

#: the largest header the safetensors library accepts
MAX_HEADER = 100_000_000


def _damaged(path: Path, what: str) -> UserError:
    return UserError(f"{path}: damaged safetensors file ({what}); copy or write it again")


def read_header(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The tensors a safetensors file lists (name -> dtype, shape, data_offsets), after checking that the
    file holds all of them; a damaged or truncated file is a :class:`UserError` naming it."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _damaged(path, f"truncated: {size} bytes, not even the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER:
            raise _damaged(path, f"its header length says {n:,} bytes: not a safetensors file")
        if 8 + n > size:
            raise _damaged(path, f"truncated: {size:,} bytes, but its header alone needs {8 + n:,}")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise _damaged(path, "its header is not JSON") from None
    if not isinstance(header, dict):
        raise _damaged(path, "its header is not a JSON object")
    header.pop("__metadata__", None)
    data = size - 8 - n
    end = 0
    for name, t in header.items():
        try:
            begin, stop = t["data_offsets"]
            dtype, shape = t["dtype"], t["shape"]
        except (KeyError, TypeError, ValueError):
            raise _damaged(
                path, f"its header entry {name[:100]!r} lacks dtype, shape or data_offsets"
            ) from None
        if dtype in DTYPE_BYTES and stop - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise _damaged(
                path, f"tensor {name[:100]!r} {dtype}{shape} does not match its {stop - begin} bytes"
            )
        end = max(end, stop)
    if end > data:
        raise _damaged(
            path, f"truncated: its tensors need {end:,} bytes after the header, the file has {data:,}"
        )
    if end < data:
        raise _damaged(path, f"{data - end:,} bytes after the last tensor")
    return header


def check_safetensors(path: str | os.PathLike[str]) -> None:
    """Raise a :class:`UserError` naming ``path`` when it is not a whole safetensors file."""
    read_header(path)


def check_model_dir(model_dir: str | os.PathLike[str]) -> None:
    """Check every safetensors file of a model directory, and that the shards its index names exist."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{index}: damaged index (no weight_map)") from None
        missing = sorted(s for s in shards if not (model_dir / s).is_file())
        if missing:
            raise UserError(f"{index}: names weight files that are missing: {', '.join(missing[:5])}")
    for path in sorted(model_dir.glob("*.safetensors")):
        check_safetensors(path)


def _lora_shapes(header: dict[str, dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each module an adapter's LoRA matrices adapt (A: r x in, B: out x r)."""
    shapes: dict[str, list[int]] = {}
    for key, t in header.items():
        for part, axis in ((".lora_A.", 1), (".lora_B.", 0)):
            if part in key and len(t["shape"]) == 2:
                module = key.split(part)[0].removeprefix("base_model.model.")
                shapes.setdefault(module, [0, 0])[1 - axis] = t["shape"][axis]
    return {m: (s[0], s[1]) for m, s in shapes.items()}


def _base_shape(model: Any, module: str) -> tuple[int, int] | None:
    try:
        mod = model.get_submodule(module)
    except AttributeError:
        return None
    if hasattr(mod, "in_features") and hasattr(mod, "out_features"):
        return int(mod.in_features), int(mod.out_features)
    weight = getattr(mod, "weight", None)
    if weight is not None and weight.dim() == 2:  # an embedding: LoRA maps its ids
        return int(weight.shape[0]), int(weight.shape[1])
    return None


def _same_model(a: str, b: str | os.PathLike[str]) -> bool:
    """Whether two model directories hold the same model (same path, or same config and weight samples)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    from llm4rec.train.fingerprint import model_digest

    return model_digest(a) == model_digest(b)


def check_adapter_dir(
    adapter_dir: str | os.PathLike[str], base: Any, base_path: str | os.PathLike[str]
) -> None:
    """Check an adapter directory before peft loads it onto ``base`` (loaded from ``base_path``): its files
    whole, each LoRA matrix the shape of the base module it adapts, and the base it records the one given.
    """
    adapter_dir = Path(adapter_dir)
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise UserError(f"{adapter_dir}: no adapter_model.safetensors")
    header = read_header(weights)
    cfg_path = adapter_dir / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{adapter_dir}: no adapter_config.json") from None
    except (OSError, ValueError):
        raise UserError(f"{cfg_path}: damaged (not JSON)") from None
    recorded = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    recorded_note = f" (the adapter records base {recorded})" if recorded else ""
    for module, (n_in, n_out) in _lora_shapes(header).items():
        have = _base_shape(base, module)
        if have is None:
            raise UserError(
                f"{adapter_dir}: adapter trained on another base{recorded_note}: it adapts {module}, which "
                f"{base_path} does not have"
            )
        if have != (n_in, n_out):
            raise UserError(
                f"{adapter_dir}: adapter trained on another base{recorded_note}: its {module} maps {n_in} -> "
                f"{n_out} features, {base_path}'s maps {have[0]} -> {have[1]}"
            )
    if (
        recorded
        and Path(recorded).is_dir()
        and Path(base_path).is_dir()
        and not _same_model(recorded, base_path)
    ):
        raise UserError(
            f"{adapter_dir}: adapter trained on {recorded}, not on {base_path} (the two hold different "
            "weights); load it onto the base it was trained on"
        )
