"""Where a sample becomes tokens and a batch is made.

A sample (one JSONL row) is rendered with the backbone's template into a prompt; training appends the
answer (``output``), the template's answer suffix and EOS. The loss is taken on the answer tokens only
unless ``train_on_inputs``. Labels are built from lengths, never by comparing ids with the pad id, so a
family whose pad token equals EOS still learns to stop.

Truncation is one rule for training, validation, evaluation and ``llm4rec show-prompt``
(:func:`fit_to_budget`): a sample over the cutoff loses whole history items, oldest first, located by its
``history_spans``; the template preamble, instruction, question, candidates and answer are never cut. A
sample that does not fit even with no history (or that carries no ``history_spans``) is an error naming
its ``file:line`` and token counts, or is skipped and counted where the caller allows it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llm4rec.data.plain_text import encode_texts, mark_sample_text
from llm4rec.errors import UserError
from llm4rec.models.answer_tokens import common_prefix_len, encode
from llm4rec.models.templates import PromptTemplate

IGNORE_INDEX = -100


def render_prompt(template: PromptTemplate, sample: dict[str, Any]) -> str:
    """The prompt text of a sample: its ``instruction`` and ``input`` in the backbone's template, the sample's
    text marked so that it stays text when tokenized (:mod:`llm4rec.data.plain_text`)."""
    return template.render(
        mark_sample_text(str(sample.get("instruction", ""))), mark_sample_text(str(sample.get("input", "")))
    )


class OverlongPrompt(UserError):
    """A sample whose prompt exceeds the cutoff even with every history item dropped."""


@dataclass
class TruncationStats:
    """How many prompts had to lose history to fit the cutoff (reported, never silent)."""

    #: prompts fitted to the cutoff
    prompts: int = 0
    #: of those, prompts that lost at least one history item
    shortened: int = 0
    #: history items dropped over all shortened prompts
    items_dropped: int = 0
    #: prompts that could not fit even with no history and were skipped
    skipped: int = 0

    def add(self, dropped: int) -> None:
        """Count one fitted prompt that lost ``dropped`` history items."""
        self.prompts += 1
        if dropped:
            self.shortened += 1
            self.items_dropped += dropped

    def merge(self, other: TruncationStats) -> None:
        """Add another set of counts to this one."""
        self.prompts += other.prompts
        self.shortened += other.shortened
        self.items_dropped += other.items_dropped
        self.skipped += other.skipped

    def as_dict(self) -> dict[str, Any]:
        """Counts for reports: ``mean_items_dropped`` is per shortened prompt."""
        mean = round(self.items_dropped / self.shortened, 3) if self.shortened else 0.0
        return {
            "prompts": self.prompts,
            "shortened": self.shortened,
            "mean_items_dropped": mean,
            "items_dropped": self.items_dropped,
            "skipped_overlong": self.skipped,
        }

    def warning(self, what: str, cutoff_len: int) -> str | None:
        """One terminal line when anything was shortened or skipped, else None."""
        if not (self.shortened or self.skipped):
            return None
        d = self.as_dict()
        text = (
            f"warning: {what}: {self.shortened} of {self.prompts} prompts over cutoff_len {cutoff_len} lost "
            f"their oldest history items (mean {d['mean_items_dropped']} dropped per shortened prompt)"
        )
        if self.skipped:
            text += f"; {self.skipped} samples skipped (too long even without history)"
        return text


def history_spans(sample: dict[str, Any], where: str = "sample") -> list[tuple[int, int, int]]:
    """The sample's droppable history items as ``(start, end, drop_end)`` offsets in its input (oldest
    first); [] when the sample does not carry ``history_spans`` (its whole input is then kept)."""
    raw = sample.get("history_spans")
    if not raw:
        return []
    n = len(str(sample.get("input", "")))
    out = []
    for span in raw:
        if (
            not isinstance(span, (list, tuple))
            or len(span) != 3
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in span)
            or not 0 <= span[0] <= span[1] <= span[2] <= n
        ):
            raise UserError(
                f"{where}: history_spans entry {span!r} is not [start, end, drop_end] within the input "
                f"({n} characters); was the input edited after prep? remove history_spans to keep it whole"
            )
        out.append((span[0], span[1], span[2]))
    return out


def drop_history(sample: dict[str, Any], d: int, where: str = "sample") -> dict[str, Any]:
    """A copy of ``sample`` without its ``d`` oldest history items (input text, ``history`` and
    ``history_spans`` all updated); ``d`` = 0 returns the sample itself."""
    spans = history_spans(sample, where)
    if d <= 0 or not spans:
        return sample
    text = str(sample.get("input", ""))
    cut = sorted((s, e) for s, _, e in spans[:d])
    pieces, pos = [], 0
    for s, e in cut:
        pieces.append(text[pos:s])
        pos = max(pos, e)
    pieces.append(text[pos:])

    def shift(x: int) -> int:
        return x - sum(e - s for s, e in cut if e <= x)

    out = dict(sample)
    out["input"] = "".join(pieces)
    out["history_spans"] = [[shift(s), shift(e), shift(de)] for s, e, de in spans[d:]]
    hist = sample.get("history")
    if isinstance(hist, list) and len(hist) == len(spans):
        out["history"] = hist[d:]
    return out


@dataclass
class Fitted:
    """A sample fitted to a token budget: the (possibly shortened) sample, its ids, items dropped."""

    sample: dict[str, Any]
    ids: list[int]
    dropped: int
    items: int


def fit_to_budget(
    sample: dict[str, Any],
    measure: Callable[[dict[str, Any]], list[int]],
    budget: int,
    where: str = "sample",
    ids: list[int] | None = None,
    limit: str = "",
) -> Fitted:
    """Drop whole history items, oldest first, until ``measure(sample)`` (token ids) has at most ``budget``
    tokens: the fewest items that make it fit are dropped. Preamble, instruction, question, candidates
    and answer are never cut; a sample that does not fit even with no history raises
    :class:`OverlongPrompt` naming ``where``, the token counts and ``limit`` (what the budget is).
    """
    ids = measure(sample) if ids is None else ids
    spans = history_spans(sample, where)
    m = len(spans)
    if len(ids) <= budget:
        return Fitted(sample, ids, 0, m)
    tried: dict[int, tuple[dict[str, Any], list[int]]] = {0: (sample, ids)}

    def at(d: int) -> tuple[dict[str, Any], list[int]]:
        if d not in tried:
            s = drop_history(sample, d, where)
            tried[d] = (s, measure(s))
        return tried[d]

    # first guess from the characters each item takes (tokens per character of this sample), then
    # the neighbours: usually two tokenizations; a binary search where the guess is off
    chars = len(str(sample.get("instruction", ""))) + len(str(sample.get("input", ""))) + 1
    need, cum, guess = (len(ids) - budget) * chars / len(ids), 0, m
    for k, (s0, _, e0) in enumerate(spans):
        cum += e0 - s0
        if cum >= need:
            guess = k + 1
            break
    lo, hi, probe = 1, None, guess  # lo: fewest items that may fit; hi: fewest known to fit
    for step in range(4 * m + 4):
        n_tok = len(at(probe)[1])
        if n_tok <= budget:
            hi = probe
        else:
            lo = probe + 1
            if probe == m:
                if m:
                    why = f"{n_tok} tokens with all {m} history items dropped ({len(ids)} with them)"
                else:
                    why = f"{len(ids)} tokens and no droppable history (no history_spans)"
                raise OverlongPrompt(
                    f"{where}: the prompt needs {why}, over {limit or f'the limit of {budget} tokens'}"
                )
        if hi is not None and lo >= hi:
            break
        if hi is None:
            probe = lo if step < 2 else m
        else:
            probe = hi - 1 if step < 2 else (lo + hi) // 2
    fitted, fitted_ids = at(hi)
    return Fitted(fitted, fitted_ids, hi, m)


def prompt_ids(
    tokenizer: Any, template: PromptTemplate, samples: Sequence[dict[str, Any]]
) -> list[list[int]]:
    """Token ids of the samples' prompts (special tokens included), tokenized in one batch: the one place a
    prompt becomes ids, for scoring, validation and ``llm4rec show-prompt``."""
    texts = [render_prompt(template, s) for s in samples]
    return [list(ids) for ids in encode_texts(tokenizer, texts)]


def train_ids(tokenizer: Any, template: PromptTemplate, samples: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Token ids of the samples' training sequences, tokenized in one batch: prompt, answer prefix,
    ``output``, answer suffix, then EOS (added unless the tokenizer already ends with it). The one place a
    training sequence becomes ids, for training and for data prep's sizing."""
    t = template
    texts = [
        render_prompt(t, s) + t.answer_prefix + str(s.get("output", "")) + t.answer_suffix for s in samples
    ]
    eos = tokenizer.eos_token_id
    out = []
    for ids in encode_texts(tokenizer, texts):
        ids = list(ids)
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        out.append(ids)
    return out


def fit_prompt(
    tokenizer: Any, template: PromptTemplate, sample: dict[str, Any], cutoff_len: int, where: str = "sample"
) -> Fitted:
    """Prompt ids for scoring: at most ``cutoff_len - 1`` tokens (room for the answer token), history
    dropped oldest first as in training."""
    return fit_to_budget(
        sample,
        lambda s: prompt_ids(tokenizer, template, [s])[0],
        cutoff_len - 1,
        where,
        limit=f"the {cutoff_len - 1} prompt tokens cutoff_len {cutoff_len} leaves (one is the answer's)",
    )


def encode_prompt(tokenizer: Any, prompt: str, cutoff_len: int) -> list[int]:
    """Token ids of a rendered prompt for scoring; a prompt over ``cutoff_len - 1`` tokens is an error
    (fit a *sample* with :func:`fit_prompt`, which can drop its history)."""
    return fit_to_budget({"input": prompt}, lambda s: encode(tokenizer, s["input"]), cutoff_len - 1).ids


@dataclass
class TrainExample:
    """One tokenized training sample."""

    input_ids: list[int]
    labels: list[int]


def encode_train_example(
    tokenizer: Any,
    template: PromptTemplate,
    sample: dict[str, Any],
    cutoff_len: int,
    train_on_inputs: bool = False,
    *,
    where: str = "sample",
    stats: TruncationStats | None = None,
) -> TrainExample:
    """Tokenize prompt + answer + suffix + EOS and mask the prompt out of the labels.

    Over ``cutoff_len`` tokens, whole history items are dropped, oldest first (:func:`fit_to_budget`);
    a sample still too long raises :class:`OverlongPrompt`. ``stats`` counts the shortened samples.
    """

    fitted = fit_to_budget(
        sample,
        lambda s: train_ids(tokenizer, template, [s])[0],
        cutoff_len,
        where,
        limit=f"cutoff_len {cutoff_len} (prompt, answer and EOS together)",
    )
    if stats is not None:
        stats.add(fitted.dropped)
    full_ids = fitted.ids
    n_prompt = common_prefix_len(prompt_ids(tokenizer, template, [fitted.sample])[0], full_ids)
    labels = list(full_ids) if train_on_inputs else [IGNORE_INDEX] * n_prompt + full_ids[n_prompt:]
    return TrainExample(full_ids, labels)


def collate(
    examples: Sequence[TrainExample], pad_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad a list of examples into ``input_ids`` / ``attention_mask`` / ``labels`` tensors."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        sl = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[i, sl] = torch.tensor(e.input_ids)
        mask[i, sl] = 1
        labels[i, sl] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def length_grouped_batches(
    lengths: Sequence[int], micro_batch_size: int, seed: int, group_by_length: bool = True
) -> Iterator[list[int]]:
    """Yield micro-batches of sample indices for one epoch.

    With ``group_by_length``, indices are shuffled, cut into mega-batches of 50 micro-batches, sorted by
    length inside each mega-batch, and the micro-batches are shuffled again: little padding, still random.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        mega = micro_batch_size * 50
        chunks = [sorted(order[i : i + mega], key=lambda j: -lengths[j]) for i in range(0, len(order), mega)]
        order = [j for c in chunks for j in c]
    batches = [order[i : i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    yield from batches


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch at effective batch ``batch_size`` (last partial step counts)."""
    return max(1, math.ceil(n_samples / batch_size))
