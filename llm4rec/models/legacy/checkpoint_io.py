"""Reading original checkpoints and writing converted ones: the one implementation every legacy converter uses.

Original weights are read one shard at a time (``.bin`` pickles only with ``weights_only=True``, so a
downloaded file cannot run code); converted tensors are written as safetensors shards of at most
:data:`SHARD_BYTES`, named as transformers names them (``model.safetensors``, or
``model-0000K-of-0000N.safetensors`` with ``model.safetensors.index.json``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from llm4rec.errors import UserError
from llm4rec.io import read_json_object

SHARD_BYTES = 2 * 1024**3


# --------------------------------------------------------------------------- original config


def read_original_config(src: Path) -> dict[str, Any]:
    """The original ``config.json`` as a dict (a UserError names a missing or broken file)."""
    path = Path(src) / "config.json"
    if not path.is_file():
        raise UserError(f"{path}: not found; --src must be the original checkpoint directory")
    return read_json_object(path)


def require(cfg: dict[str, Any], key: str, src: Path) -> Any:
    """``cfg[key]``, or a UserError naming the missing field of ``src/config.json``."""
    if key not in cfg or cfg[key] is None:
        raise UserError(
            f"{Path(src) / 'config.json'}: field {key!r} is missing; is this the original config?"
        )
    return cfg[key]


def config_value(cfg: dict[str, Any], key: str, src: Path, kind: type = int) -> Any:
    """``cfg[key]`` checked for presence and type (bools are not ints here)."""
    value = require(cfg, key, src)
    ok = isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
    if not ok or (kind is int and isinstance(value, bool)):
        raise UserError(f"{src / 'config.json'}: {key!r} should be {kind.__name__}, got {value!r}")
    return float(value) if kind is float else value


# --------------------------------------------------------------------------- original weights


def original_shards(src: Path) -> list[Path]:
    """The weight files of an original checkpoint, safetensors preferred, in index order."""
    src = Path(src)
    for index_name, single, pattern in (
        ("model.safetensors.index.json", "model.safetensors", "*.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin", "pytorch_model*.bin"),
    ):
        index = src / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                files = [src / name for name in dict.fromkeys(weight_map.values())]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise UserError(f"{index}: not a weight index (no 'weight_map')") from None
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise UserError(
                    f"{index}: lists {missing[0]}, which is missing from {src} (incomplete download?)"
                )
            return files
        if (src / single).is_file():
            return [src / single]
        found = sorted(src.glob(pattern))
        if found:
            return found
    raise UserError(f"{src}: no *.safetensors or pytorch_model*.bin weight files found")


def load_shard(path: Path) -> dict[str, torch.Tensor]:
    """One weight file as a state dict; pickles are opened with ``weights_only=True`` (no code runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # pre-zip (torch < 1.6) files cannot be memory-mapped
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # an unsafe pickle, a truncated file...
        raise UserError(
            f"{path}: cannot be read with weights_only=True ({str(exc).splitlines()[0]}); "
            "re-save it as safetensors"
        ) from None
    if not isinstance(sd, dict):
        raise UserError(f"{path}: expected a state dict")
    return sd


def iter_original_tensors(src: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every (key, tensor) of an original checkpoint, one shard in memory at a time."""
    for shard in original_shards(src):
        yield from load_shard(shard).items()


# --------------------------------------------------------------------------- converted weights


class ShardWriter:
    """Write converted tensors as safetensors shards of at most ``max_bytes`` each, then the index."""

    def __init__(self, out: Path, max_bytes: int = SHARD_BYTES) -> None:
        self.out = Path(out)
        self.max_bytes = max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.weight_map: dict[str, str] = {}
        self.files: list[str] = []
        self.total = 0

    def __contains__(self, key: str) -> bool:
        return key in self.weight_map or key in self.pending

    def add(self, key: str, tensor: torch.Tensor) -> None:
        """Queue one tensor; a full shard is flushed to disk."""
        if key in self:
            raise ValueError(f"tensor {key} written twice")
        nbytes = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + nbytes > self.max_bytes:
            self.flush()
        self.pending[key] = tensor.contiguous()
        self.pending_bytes += nbytes
        self.total += nbytes

    def flush(self) -> None:
        """Write the queued tensors as the next shard."""
        from safetensors.torch import save_file

        if not self.pending:
            return
        name = f"model-{len(self.files) + 1:05d}.safetensors"
        save_file(self.pending, str(self.out / name), metadata={"format": "pt"})
        self.files.append(name)
        self.weight_map.update(dict.fromkeys(self.pending, name))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        """Flush, give the shards their final names and write the index (none for a single shard)."""
        self.flush()
        n = len(self.files)
        final = {
            f: "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            for i, f in enumerate(self.files, 1)
        }
        for old, new in final.items():
            (self.out / old).rename(self.out / new)
        self.weight_map = {k: final[v] for k, v in self.weight_map.items()}
        if n > 1:
            index = {
                "metadata": {"total_size": self.total},
                "weight_map": dict(sorted(self.weight_map.items())),
            }
            (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def convert_checkpoint(
    src: Path,
    out: Path,
    convert_tensor: Callable[[str, torch.Tensor], list[tuple[str, torch.Tensor]]],
    expected: Counter[str],
) -> dict[str, torch.dtype]:
    """Convert every original tensor with ``convert_tensor`` and check the result is complete.

    ``expected`` counts converted key patterns (digits replaced by ``N``) that must each appear that many
    times. Returns the dtypes seen, most common first (to record in config.json).
    """
    writer = ShardWriter(out)
    seen: Counter[str] = Counter()
    dtypes: Counter[torch.dtype] = Counter()
    for key, tensor in iter_original_tensors(src):
        for new_key, new_tensor in convert_tensor(key, tensor):
            if new_key in writer:
                raise UserError(f"{src}: tensor {key} converts onto {new_key} a second time")
            writer.add(new_key, new_tensor)
            seen[re.sub(r"\.\d+\.", ".N.", new_key)] += 1
            dtypes[new_tensor.dtype] += new_tensor.numel()
    writer.close()
    for pattern, count in expected.items():
        if seen[pattern] != count:
            raise UserError(
                f"{src}: expected {count} tensors {pattern}, found {seen[pattern]}; incomplete checkpoint?"
            )
    return dict.fromkeys(d for d, _ in dtypes.most_common())


def check_vocab_fits(src: Path, n_ids: int, vocab_size: int) -> None:
    """Refuse a converted tokenizer with more ids than the model has embedding rows."""
    if n_ids > vocab_size:
        raise UserError(f"{src}: the tokenizer has {n_ids} ids but the model only {vocab_size}")


def dtype_name(dtypes: dict[torch.dtype, Any]) -> str:
    """The most common floating dtype of a checkpoint as a config string (``bfloat16``...)."""
    for d in dtypes:
        if d.is_floating_point:
            return str(d).removeprefix("torch.")
    return "float32"


def split_rows(t: torch.Tensor, n: int, key: str) -> list[torch.Tensor]:
    """Split a fused projection (weight rows or bias) into ``n`` equal consecutive blocks."""
    if t.shape[0] % n:
        raise UserError(f"{key}: first dimension {t.shape[0]} does not split into {n} equal parts")
    return [p.clone() for p in torch.chunk(t, n, dim=0)]


def write_config(class_name: str, fields: dict[str, Any], out: Path) -> None:
    """Save ``config.json`` through transformers' config class (validates and writes the current format)."""
    import transformers

    cls = getattr(transformers, class_name)
    cls(**{k: v for k, v in fields.items() if k != "model_type"}).save_pretrained(str(out))


def save_fast_tokenizer(
    backend: Any, out: Path, max_length: int, tokenizer_class: str = "TokenizersBackend", **settings: Any
) -> int:
    """Write a converted tokenizer: ``tokenizer.json`` and a ``tokenizer_config.json`` with its class, the
    release's special tokens and other ``settings``. Returns the number of ids."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backend.save(str(out / "tokenizer.json"))
    config = {"backend": "tokenizers", "tokenizer_class": tokenizer_class, **settings}
    config.update(model_max_length=max_length, clean_up_tokenization_spaces=False)
    text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    (out / "tokenizer_config.json").write_text(text, encoding="utf-8")
    return backend.get_vocab_size(with_added_tokens=True)


# --------------------------------------------------------------------------- original tokenizer files


def load_sp_proto(path: Path) -> Any:
    """The parsed sentencepiece ``ModelProto`` of ``path`` (a corrupt file is a UserError)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except Exception as exc:  # protobuf raises its own DecodeError
        raise UserError(f"{path}: not a sentencepiece model ({exc})") from None
    if not proto.pieces:  # protobuf parses many other files as an empty message
        raise UserError(f"{path}: not a sentencepiece model (no pieces)")
    return proto
