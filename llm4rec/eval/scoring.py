"""The scoring core: answer probabilities from one forward pass per prompt, and less where prompts share text.

Every task reduces to "the logits of a few answer tokens at the last prompt position":

* binary (TALLRec): P(Yes) = softmax over the first tokens of ("Yes.", "No.") — :func:`score_binary`;
* listwise ranking (LlamaRec's verbalizer): the K index letters' logits in one pass per user —
  :func:`score_choices`;
* pointwise ranking: P(Yes) of every candidate's Yes/No prompt, with the user's history computed once
  and the candidate suffixes batched — :func:`score_pointwise`.

Each reduces to :func:`llm4rec.eval.sequence_scoring.score_token_sequences` (shared prefixes computed once,
suffixes batched, the head read on the answer rows only); this module renders and fits the prompts and
turns the answer logits into probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llm4rec.data.plain_text import encode_texts
from llm4rec.data.tokenize import TruncationStats, fit_to_budget
from llm4rec.errors import UserError
from llm4rec.eval.sequence_scoring import ScoringStats, score_token_sequences, to_device

#: the task-level scoring API; ScoringStats is what callers pass as ``stats=``
__all__ = [
    "ScoringStats",
    "answer_logits",
    "encode_prompts",
    "fit_prompts",
    "pointwise_samples",
    "score_binary",
    "score_choices",
    "score_pointwise",
]


# ------------------------------------------------------------------------------------------------ tokens


def encode_prompts(tokenizer: Any, prompts: Sequence[str], cutoff_len: int) -> list[list[int]]:
    """Token ids of many rendered prompts at once, identical to :func:`llm4rec.data.tokenize.encode_prompt`
    per prompt (a prompt over ``cutoff_len - 1`` tokens is an error: fit samples with :func:`fit_prompts`)."""
    ids = encode_texts(tokenizer, prompts)
    for i, seq in enumerate(ids):
        if len(seq) > cutoff_len - 1:
            fit_to_budget({"input": prompts[i]}, list, cutoff_len - 1, f"prompt {i + 1}", ids=list(seq))
    return [list(seq) for seq in ids]


def fit_prompts(
    backbone: Any,
    samples: Sequence[dict[str, Any]],
    cutoff_len: int | None = None,
    *,
    sources: Sequence[str] | None = None,
    stats: TruncationStats | None = None,
) -> list[list[int]]:
    """Prompt ids of many samples, exactly as :meth:`Backbone.encode_prompt
    <llm4rec.models.backbone.Backbone.encode_prompt>` gives them one by one: tokenized in one batch, and the
    few over ``cutoff_len - 1`` tokens (default: the backbone's cutoff) refitted by dropping their oldest
    history items (the preamble and question are never cut, so shared-prefix reuse survives). ``sources``
    name each sample in errors (``file:line``); ``stats`` counts the shortened prompts."""
    cutoff_len = cutoff_len or backbone.cutoff_len
    out = []
    for i, (sample, seq) in enumerate(zip(samples, backbone.prompt_ids(samples))):
        where = sources[i] if sources is not None else f"sample {i + 1}"
        fitted = fit_to_budget(
            sample,
            lambda s: backbone.prompt_ids([s])[0],
            cutoff_len - 1,
            where,
            ids=seq,
            limit=f"the {cutoff_len - 1} prompt tokens cutoff_len {cutoff_len} leaves (one is the answer's)",
        )
        if stats is not None:
            stats.add(fitted.dropped)
        out.append(fitted.ids)
    return out


# ------------------------------------------------------------------------------------------------ tasks


def score_binary(
    model: Any,
    backbone: Any,
    samples: Sequence[dict[str, Any]],
    answers: Sequence[str] | None = None,
    *,
    batch_size: int = 16,
    cutoff_len: int | None = None,
    progress: bool = False,
    **options: Any,
) -> torch.Tensor:
    """P(first answer) per sample: softmax over the answers' first-token logits at the last prompt position.

    ``model`` is ``backbone``'s loaded model (:meth:`~llm4rec.models.backbone.Backbone.load_model`, or one
    being trained); ``answers`` and ``cutoff_len`` default to the backbone's. Returns a float32 tensor on
    the model's device, one score per sample, in the samples' order. ``options`` go to
    :func:`~llm4rec.eval.sequence_scoring.score_token_sequences` (``max_batch_tokens``, ``stats``...).
    """
    logits = answer_logits(
        model, backbone, samples, answers, cutoff_len, batch_size=batch_size, progress=progress, **options
    )
    return torch.softmax(logits, dim=-1)[:, 0]


def answer_logits(
    model: Any,
    backbone: Any,
    samples: Sequence[dict[str, Any]],
    answers: Sequence[str] | None = None,
    cutoff_len: int | None = None,
    **options: Any,
) -> torch.Tensor:
    """Logits [N, A] of the answers' first tokens after each sample's prompt (the shared core of the
    ``score_*`` functions), prompts fitted by :func:`fit_prompts` (``sources``: one ``file:line`` per sample
    for its errors); other ``options`` go to :func:`~llm4rec.eval.sequence_scoring.score_token_sequences`.
    Whether shared prefixes may be reused is the backbone family's to say (``prefix_safe``)."""
    if not samples:
        raise UserError("no samples to score")
    ids = backbone.answer_token_ids(samples[0], answers)
    stats = options.get("stats")
    seqs = fit_prompts(
        backbone,
        samples,
        cutoff_len,
        sources=options.pop("sources", None),
        stats=stats.truncation if stats is not None else None,
    )
    options.setdefault("prefix_safe", backbone.family.prefix_safe)
    return score_token_sequences(model, seqs, ids, pad_token_id=_pad_id(backbone.tokenizer), **options)


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            return int(v)
    return 0


def score_choices(
    model: Any,
    backbone: Any,
    samples: Sequence[dict[str, Any]],
    *,
    labels: Sequence[str] | None = None,
    batch_size: int = 16,
    cutoff_len: int | None = None,
    progress: bool = False,
    **options: Any,
) -> torch.Tensor:
    """Listwise ranking (LlamaRec's verbalizer): P(candidate k) [N, K] from the index letters' logits.

    Each sample's prompt lists its candidates under index labels (``A``, ``B``, ...); one pass per sample
    reads the labels' first-token logits at the answer position. Samples with fewer candidates than the
    widest one get probability 0 for the missing labels.
    """
    if not samples:
        raise UserError("no samples to score")
    counts = [_n_candidates(s, i) for i, s in enumerate(samples)]
    k = max(counts)
    # the ranking task's own letters (imported here: task modules load polars, which binary scoring never needs)
    from llm4rec.data.tasks.ranking import LETTERS

    labels = list(labels or LETTERS)
    if k > len(labels):
        raise UserError(f"a sample has {k} candidates but only {len(labels)} index labels exist")
    logits = answer_logits(
        model, backbone, samples, labels[:k], cutoff_len, batch_size=batch_size, progress=progress, **options
    )
    if min(counts) < k:
        valid = torch.arange(k)[None] < torch.tensor(counts)[:, None]
        logits = logits.masked_fill(~to_device(valid, logits.device), float("-inf"))
    return torch.softmax(logits, dim=-1)


def _n_candidates(sample: dict[str, Any], i: int) -> int:
    cands = sample.get("candidates")
    if not isinstance(cands, list) or not cands:
        raise UserError(f"sample {i + 1}: a ranking sample needs a non-empty 'candidates' list")
    return len(cands)


def score_pointwise(
    model: Any,
    backbone: Any,
    samples: Sequence[dict[str, Any]],
    groups: Sequence[Any],
    answers: Sequence[str] | None = None,
    *,
    batch_size: int = 16,
    cutoff_len: int | None = None,
    progress: bool = False,
    **options: Any,
) -> torch.Tensor:
    """Pointwise ranking: P(first answer) per sample, where samples with the same ``groups`` key (one user's
    candidates) share their history; each group's common prompt prefix is computed once.

    Same values as :func:`score_binary` on the same samples (the grouping only saves work).
    """
    if len(groups) != len(samples):
        raise ValueError("one group key per sample is required")
    return score_binary(
        model,
        backbone,
        samples,
        answers,
        groups=groups,
        batch_size=batch_size,
        cutoff_len=cutoff_len,
        progress=progress,
        **options,
    )


def pointwise_samples(
    samples: Sequence[dict[str, Any]], sources: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], list[int], list[int]]:
    """Expand listwise ranking samples into one Yes/No sample per candidate.

    A sample's ``pointwise_inputs`` (one input per candidate, with an optional ``pointwise_instruction``)
    are used as given. Otherwise the ranking task builds them from the sample's structured fields
    (:func:`llm4rec.data.tasks.ranking.pointwise_prompts`: the question in the sample's language, its
    history part, each candidate's title). All candidates of a sample share the history, so
    :func:`score_pointwise` computes it once. ``sources`` name each sample in errors (``file:line``).
    Returns (samples, owner index per row, candidates per sample).
    """
    from llm4rec.data.tasks.ranking import pointwise_prompts

    rows: list[dict[str, Any]] = []
    owner: list[int] = []
    counts: list[int] = []
    for i, s in enumerate(samples):
        n = _n_candidates(s, i)
        where = sources[i] if sources is not None else f"sample {i + 1}"
        inputs = s.get("pointwise_inputs")
        if inputs is None:
            built = pointwise_prompts(s, where)
        elif not isinstance(inputs, list) or len(inputs) != n:
            raise UserError(f"{where}: 'pointwise_inputs' must hold one input per candidate ({n})")
        else:
            instruction = s.get("pointwise_instruction", s.get("instruction", ""))
            built = [{"instruction": instruction, "input": text} for text in inputs]
        rows.extend(built)
        owner.extend([i] * n)
        counts.append(n)
    return rows, owner, counts
