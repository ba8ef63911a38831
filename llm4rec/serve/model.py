"""A checkpoint loaded once, scoring (history, candidate) prompts: the one place serving (and export)
calls the backbone and scoring core (:mod:`llm4rec.models.backbone`, :mod:`llm4rec.eval.scoring`).

Scores are those of ``llm4rec evaluate``: the same loader, the same prompt fitting (``cutoff_len`` from
the checkpoint's recipe, oldest history items dropped to fit), the same answer words. Yes/No scores are
P(first answer word) normalised over the two answer words' first tokens; letter scores are the softmax
over the pool's index letters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: memory scale of one forward pass (whole prompts' worth of tokens), as ``llm4rec evaluate --batch-size``
BATCH_SIZE = 16


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint directory says about itself, read without loading weights."""

    path: str
    family: str
    template: str
    answers: tuple[str, str]
    lang: str
    cutoff_len: int
    #: the directory the base weights come from
    base: str
    #: whether the checkpoint is an adapter (else a bare model directory)
    adapter: bool
    #: the training data file of an adapter's recipe ('' for a bare model)
    train_data: str
    #: the resolved backbone everything above was read from
    backbone: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "checkpoint": self.path,
            "family": self.family,
            "template": self.template,
            "answers": list(self.answers),
            "lang": self.lang,
            "cutoff_len": self.cutoff_len,
            "base_model": self.base,
            "adapter": self.path if self.adapter else None,
        }


def read_info(checkpoint: str | Path, device: str | None = None) -> CheckpointInfo:
    """The checkpoint's backbone resolved once (:func:`llm4rec.models.backbone.resolve_backbone`: family,
    tokenizer, template, answers, language, cutoff, base), without its weights."""
    from llm4rec.models.backbone import resolve_backbone

    bb = resolve_backbone(checkpoint, device=device)
    return CheckpointInfo(
        path=str(checkpoint),
        family=bb.family.name,
        template=bb.template.name,
        answers=tuple(bb.answers),  # type: ignore[arg-type]
        lang=bb.lang,
        cutoff_len=bb.cutoff_len,
        base=bb.source,
        adapter=bb.adapter is not None,
        train_data=_train_data(Path(checkpoint)) if bb.adapter is not None else "",
        backbone=bb,
    )


def _train_data(checkpoint: Path) -> str:
    """The training data file the adapter's saved recipe names."""
    import yaml

    raw = yaml.safe_load((checkpoint / "recipe.yaml").read_text(encoding="utf-8")) or {}
    return str((raw.get("data") or {}).get("train") or "")


class LoadedModel:
    """A checkpoint's model on its resolved backbone (tokenizer, template, answer words), loaded once for
    many calls.

    Not thread-safe: one thread (the server's batch worker, or the ``recommend`` command) owns it.
    """

    def __init__(self, info: CheckpointInfo, device: str | None = None) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a weight-loading bar is noise in a command's or server's output
        self.info = info
        self.backbone = info.backbone
        self.model = self.backbone.load_model(device)

    def score_yes_no(self, samples: Sequence[dict[str, Any]], groups: Sequence[Any]) -> list[float]:
        """P(Yes) of each Yes/No sample; samples with the same ``groups`` key share their history prefix,
        which is computed once (and the prefix common to all samples once for the whole call)."""
        from llm4rec.eval.scoring import score_pointwise

        with torch.no_grad():
            p = score_pointwise(self.model, self.backbone, samples, groups, batch_size=BATCH_SIZE)
        return p.float().cpu().tolist()

    def score_letters(self, samples: Sequence[dict[str, Any]]) -> list[list[float]]:
        """P(candidate) per listwise sample: the softmax over its pool's index letters."""
        from llm4rec.eval.scoring import score_choices

        with torch.no_grad():
            p = score_choices(self.model, self.backbone, samples, batch_size=BATCH_SIZE)
        counts = [len(s["candidates"]) for s in samples]
        return [row[:n] for row, n in zip(p.float().cpu().tolist(), counts)]


def base_directory(info: CheckpointInfo) -> str:
    """The absolute directory of an adapter's base as transformers loads it (for a legacy family, its
    converted copy, converted when the backbone was resolved)."""
    return str(Path(info.backbone.weights).resolve())


def merged_model(info: CheckpointInfo, dtype: str) -> Any:
    """The adapter merged into its base loaded unquantized in ``dtype`` on the CPU (training's 4-bit NF4
    copy cannot take the merge: LoRA's product is added to each real weight)."""
    import dataclasses

    bb = dataclasses.replace(info.backbone, load_in_4bit=False, compute_dtype=getattr(torch, dtype))
    return bb.load_model("cpu").merge_and_unload()


def save_checkpoint_tokenizer(info: CheckpointInfo, out: Path) -> None:
    """Save the checkpoint's tokenizer (with its chat template and original vocabulary file) into ``out``."""
    from llm4rec.models.loading import save_tokenizer

    save_tokenizer(info.backbone.tokenizer, out)
