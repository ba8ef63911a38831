"""A checkpoint loaded once, scoring (history, candidate) prompts: the one place serving (and export)
calls the loading and scoring core (:mod:`llm4rec.models.loading`, :mod:`llm4rec.eval.scoring`).

Scores are those of ``llm4rec evaluate``: the same loader, the same prompt fitting (``cutoff_len`` from
the checkpoint's recipe, oldest history items dropped to fit), the same answer words. Yes/No scores are
P(first answer word) normalised over the two answer words' first tokens; letter scores are the softmax
over the pool's index letters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


def read_info(checkpoint: str | Path) -> CheckpointInfo:
    """The checkpoint's family, template, answers, language, cutoff and base, without its weights."""
    from llm4rec.models.loading import load_prompt_settings

    ps = load_prompt_settings(checkpoint)
    recipe = ps.recipe
    return CheckpointInfo(
        path=str(checkpoint),
        family=ps.family.name,
        template=ps.template.name,
        answers=tuple(ps.answers),  # type: ignore[arg-type]
        lang=ps.lang,
        cutoff_len=ps.cutoff_len,
        base=ps.model_path,
        adapter=recipe is not None,
        train_data=str(recipe.data.train) if recipe is not None else "",
    )


class LoadedModel:
    """A checkpoint's model, tokenizer, template and answer words, loaded once for many calls.

    Not thread-safe: one thread (the server's batch worker, or the ``recommend`` command) owns it.
    """

    def __init__(self, checkpoint: str | Path, device: str | None = None) -> None:
        from transformers.utils import logging as hf_logging

        from llm4rec.models.loading import load_checkpoint

        hf_logging.disable_progress_bar()  # a weight-loading bar is noise in a command's or server's output
        self.info = read_info(checkpoint)
        self._bundle = load_checkpoint(checkpoint, device=device)

    def score_yes_no(self, samples: Sequence[dict[str, Any]], groups: Sequence[Any]) -> list[float]:
        """P(Yes) of each Yes/No sample; samples with the same ``groups`` key share their history prefix,
        which is computed once (and the prefix common to all samples once for the whole call)."""
        from llm4rec.eval.scoring import score_pointwise

        b = self._bundle
        with torch.no_grad():
            p = score_pointwise(
                b.model,
                b.tokenizer,
                b.template,
                samples,
                groups,
                b.answers,
                batch_size=BATCH_SIZE,
                cutoff_len=b.cutoff_len,
            )
        return p.float().cpu().tolist()

    def score_letters(self, samples: Sequence[dict[str, Any]]) -> list[list[float]]:
        """P(candidate) per listwise sample: the softmax over its pool's index letters."""
        from llm4rec.eval.scoring import score_choices

        b = self._bundle
        with torch.no_grad():
            p = score_choices(
                b.model, b.tokenizer, b.template, samples, batch_size=BATCH_SIZE, cutoff_len=b.cutoff_len
            )
        counts = [len(s["candidates"]) for s in samples]
        return [row[:n] for row, n in zip(p.float().cpu().tolist(), counts)]


def base_directory(checkpoint: str | Path) -> str:
    """The absolute directory of an adapter's base as transformers loads it (for a legacy family, its
    converted copy, converted on first use)."""
    from llm4rec.models.loading import load_prompt_settings, resolve_model_path

    ps = load_prompt_settings(checkpoint)
    return str(Path(resolve_model_path(ps.model_path, ps.family)).resolve())


def merged_model(checkpoint: str | Path, dtype: str) -> Any:
    """The adapter merged into its base loaded unquantized in ``dtype`` on the CPU (training's 4-bit NF4
    copy cannot take the merge: LoRA's product is added to each real weight)."""
    from peft import PeftModel

    from llm4rec.models.loading import load_base_model
    from llm4rec.models.registry import get_family

    info = read_info(checkpoint)
    model = load_base_model(
        base_directory(checkpoint),
        get_family(info.family),
        load_in_4bit=False,
        compute_dtype=dtype,
        device="cpu",
    )
    return PeftModel.from_pretrained(model, str(checkpoint), is_trainable=False).merge_and_unload()


def save_checkpoint_tokenizer(checkpoint: str | Path, out: Path) -> None:
    """Save the checkpoint's tokenizer (with its chat template and original vocabulary file) into ``out``."""
    from llm4rec.models.loading import load_prompt_settings, save_tokenizer

    save_tokenizer(load_prompt_settings(checkpoint).tokenizer, out)
