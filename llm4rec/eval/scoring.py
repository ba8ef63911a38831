"""The scoring core: answer probabilities from one forward pass per prompt, and less where prompts share text.

Every task reduces to "the logits of a few answer tokens at the last prompt position":

* binary (TALLRec): P(Yes) = softmax over the first tokens of ("Yes.", "No.") — :func:`score_binary`;
* listwise ranking (LlamaRec's verbalizer): the K index letters' logits in one pass per user —
  :func:`score_choices`;
* pointwise ranking: P(Yes) of every candidate's Yes/No prompt, with the user's history computed once
  and the candidate suffixes batched — :func:`score_pointwise`.

How the work is cut (see :func:`score_token_sequences`):

1. prompts are tokenized exactly as training tokenizes them, then split token-exactly into the longest
   common prefix of *all* prompts (template + instruction), optionally a per-group prefix (a user's
   history shared by that user's candidates), and a suffix;
2. the common prefix runs once; its key/value cache is broadcast to every batch; group prefixes run once
   per group on top of it and are gathered per row straight into each layer's attention input;
3. suffixes are sorted by length and packed into token-budget batches (right padding, explicit
   ``position_ids``, a 2-D mask that also hides the padding inside group prefixes);
4. the decoder trunk returns hidden states; only each row's last real position is kept and multiplied
   by the answer tokens' rows of the output head (a few dot products instead of a vocabulary-wide matmul);
5. everything is queued on the device: index tensors are built on the host ahead of time (pinned and
   copied without blocking on CUDA), scores are written into one preallocated device tensor, and nothing
   reads a value back until the caller does.

Models whose positions are not plain 1-D (ChatGLM-6B), that scale their logits, or that are not a
LoRA-style peft model fall back to the generic path: whole prompts, left padding, ``logits_to_keep=1``.

Devices: one code path. The model's device and dtype decide (``load_checkpoint`` loads bf16/fp16 on
CUDA, with SDPA or flash attention as the recipe says); host-built index tensors are pinned and copied
``non_blocking`` on CUDA. Shared-prefix caches are read, never written: the suffix passes use a cache
layer that returns past + new keys/values to attention without storing them. Verified on CPU (fp32 and
bitsandbytes NF4); the CUDA path has not been run by these tests.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from llm4rec.data.plain_text import encode_texts
from llm4rec.data.tokenize import TruncationStats, fit_to_budget, render_prompt
from llm4rec.errors import UserError
from llm4rec.models.answer_tokens import answer_token_ids
from llm4rec.models.registry import family_of_config
from llm4rec.models.templates import PromptTemplate

#: config attributes that transform logits after the output head; any of them set disables head slicing
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")

#: prefixes shorter than this are not worth a separate forward pass
MIN_PREFIX_TOKENS = 4

#: index labels for listwise ranking (LlamaRec shows candidates as A., B., ...)
INDEX_LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass
class ScoringStats:
    """What the core computed, for benchmarks and reports (token counts are positions run through the model)."""

    method: str = ""
    prompts: int = 0
    #: sum of prompt lengths: what scoring each prompt on its own costs
    prompt_tokens: int = 0
    #: distinct token prefixes over all prompts (trie nodes): the least any exact method must compute
    unique_tokens: int = 0
    #: positions actually run through the model, padding included
    tokens_run: int = 0
    #: pad positions among tokens_run
    padding_tokens: int = 0
    forward_passes: int = 0
    #: prompt-head tokens common to every prompt, computed once and reused from the cache
    shared_prefix_tokens: int = 0
    #: group-prefix tokens beyond the shared prefix (e.g. one user's history), each run once per group
    group_prefix_tokens: int = 0
    #: whether the decoder was driven directly (prefix cache, head on answer positions), not model()
    fast_path: bool = False
    #: prompts that lost history items to fit the cutoff (filled by :func:`answer_logits`)
    truncation: TruncationStats = field(default_factory=TruncationStats)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def work_ratio(self) -> float:
        """tokens_run / unique_tokens (1.0 = every unique token computed exactly once)."""
        return self.tokens_run / self.unique_tokens if self.unique_tokens else float("nan")


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
    tokenizer: Any,
    template: PromptTemplate,
    samples: Sequence[dict[str, Any]],
    cutoff_len: int,
    *,
    sources: Sequence[str] | None = None,
    stats: TruncationStats | None = None,
) -> list[list[int]]:
    """Prompt ids of many samples, exactly as :func:`llm4rec.data.tokenize.fit_prompt` gives them one by one:
    tokenized in one batch, and the few over ``cutoff_len - 1`` tokens refitted by dropping their oldest
    history items (the preamble and question are never cut, so shared-prefix reuse survives). ``sources``
    name each sample in errors (``file:line``); ``stats`` counts the shortened prompts."""
    prompts = [render_prompt(template, s) for s in samples]
    ids = encode_texts(tokenizer, prompts)
    out = []
    for i, (sample, seq) in enumerate(zip(samples, ids)):
        where = sources[i] if sources is not None else f"sample {i + 1}"
        fitted = fit_to_budget(
            sample,
            lambda s: encode_texts(tokenizer, [render_prompt(template, s)])[0],
            cutoff_len - 1,
            where,
            ids=list(seq),
            limit=f"the {cutoff_len - 1} prompt tokens cutoff_len {cutoff_len} leaves (one is the answer's)",
        )
        if stats is not None:
            stats.add(fitted.dropped)
        out.append(fitted.ids)
    return out


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by all ``seqs``."""
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
        if n == 0:
            break
    return n


def unique_prefix_tokens(seqs: Sequence[Sequence[int]]) -> int:
    """Number of distinct non-empty prefixes among ``seqs``: tokens an ideal prefix-sharing scorer computes."""
    root: dict[int, Any] = {}
    n = 0
    for seq in seqs:
        node = root
        for t in seq:
            nxt = node.get(t)
            if nxt is None:
                nxt = node[t] = {}
                n += 1
            node = nxt
    return n


# ------------------------------------------------------------------------------------------------ model


@dataclass
class _Parts:
    """How to run a model: its trunk and output rows (fast path) or the whole model (generic path)."""

    model: Any
    device: torch.device
    decoder: Any | None = None
    head: Any | None = None
    #: 1-D positions may be passed (and prefixes reused)
    plain_positions: bool = False
    accepts_logits_to_keep: bool = False


def _unwrap_peft(model: Any) -> tuple[Any, bool]:
    """The transformers model inside a peft wrapper, and whether calling its trunk keeps the adapter active."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        cfg = getattr(model, "active_peft_config", None)
        if cfg is None or getattr(cfg, "is_prompt_learning", False):
            return model, False  # prompt tuning adds virtual tokens in PeftModel.forward: keep it
        return model.get_base_model(), True
    return model, True


def _resolve(model: Any, fast: bool = True) -> _Parts:
    base, trunk_ok = _unwrap_peft(model)
    emb = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    device = emb.weight.device if emb is not None else next(model.parameters()).device
    config = getattr(base, "config", None)
    # the family says whether prefix reuse and the sliced output head are exact for its models
    family = family_of_config(config) if config is not None else None
    plain = family is not None and family.prefix_safe
    try:  # a peft wrapper passes keyword arguments through to the model it wraps
        accepts = "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        accepts = False
    parts = _Parts(model=model, device=device, plain_positions=plain, accepts_logits_to_keep=accepts)
    if not (fast and trunk_ok and plain) or any(getattr(config, a, None) for a in _LOGIT_TRANSFORMS):
        return parts
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or decoder is base or head is None:
        return parts
    parts.decoder, parts.head = decoder, head
    return parts


def _head_rows(head: Any, answer_ids: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """hidden [B, H] -> answer logits [B, A], reading only the answer rows when the head is a plain Linear."""
    if type(head) is torch.nn.Linear:
        w = head.weight.index_select(0, answer_ids)
        b = head.bias.index_select(0, answer_ids) if head.bias is not None else None
        return lambda h: torch.nn.functional.linear(h.to(w.dtype), w, b)
    # quantized or adapted head: run it on the kept positions only, then pick the answer columns
    return lambda h: head(h).index_select(-1, answer_ids)


# ------------------------------------------------------------------------------------------------ batches


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _pack(
    lengths: Sequence[int],
    order: Sequence[int],
    budget: int,
    max_rows: int,
    extra: int = 0,
    max_padding: float = 0.15,
) -> list[list[int]]:
    """Cut ``order`` (sorted by length, longest first) into batches of at most ``budget`` padded tokens
    (each row counting ``extra`` more), starting a new batch early when padding would pass
    ``max_padding`` of a batch that already has a few rows. A small last batch joins the one before: a
    forward pass has a fixed cost (kernel launches, 4-bit dequantization) that a handful of rows does not
    repay."""
    batches: list[list[int]] = []
    cur: list[int] = []
    width = real = 0
    for i in order:
        w = max(width, lengths[i])
        n = len(cur) + 1
        if cur and (
            (w + extra) * n > budget
            or len(cur) >= max_rows
            or (len(cur) >= 8 and w * n > (1 + max_padding) * (real + lengths[i]))
        ):
            batches.append(cur)
            cur, w, real = [], lengths[i], 0
        cur.append(i)
        width = w
        real += lengths[i]
    if cur:
        if batches and (width + extra) * len(cur) < budget // 4 and len(batches[-1]) + len(cur) <= max_rows:
            batches[-1].extend(cur)
        else:
            batches.append(cur)
    return batches


def _new_cache(
    config: Any,
    past: Sequence[tuple[torch.Tensor, torch.Tensor]] | None,
    keep: bool = True,
    rows: torch.Tensor | None = None,
) -> Any:
    """A cache holding ``past`` (its ``rows`` only, when given).

    ``keep=False``: the forward's new keys/values go to attention but are not stored (nothing reads them
    later), so ``past`` is read once into each layer's attention input and never copied into the cache.
    """
    if past is None:
        return DynamicCache(config=config)
    cache = DynamicCache(config=config)
    if keep or len(cache.layers) != len(past) or any(type(x) is not DynamicLayer for x in cache.layers):
        if rows is not None:
            past = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in past]
        # the cache concatenates into new tensors, so the shared prefix tensors are never written to
        return DynamicCache(ddp_cache_data=list(past), config=config)
    layers = []
    for k, v in past:
        layer = _ReadOnlyLayer()
        layer.lazy_initialization(k, v)
        layer.keys, layer.values, layer.rows = k, v, rows
        layers.append(layer)
    cache.layers = layers
    return cache


class _ReadOnlyLayer(DynamicLayer):
    """A cache layer whose stored keys/values never change: ``update`` returns past + new, stores nothing.

    With ``rows``, past row ``rows[i]`` serves batch row ``i``: gathered straight into the attention
    input (one copy, no intermediate tensor).
    """

    rows: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):  # type: ignore[override]
        if self.rows is None:
            return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)
        return self._gather(self.keys, key_states), self._gather(self.values, value_states)

    def _gather(self, past: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        p = past.shape[-2]
        out = new.new_empty((new.shape[0], new.shape[1], p + new.shape[2], new.shape[3]))
        torch.index_select(past, 0, self.rows, out=out[:, :, :p])
        out[:, :, p:] = new
        return out


def _broadcast(kv: Any, rows: int) -> Any:
    """A batch-1 cache's tensors viewed as ``rows`` rows (no copy until the cache concatenates)."""
    if kv is None:
        return None
    return [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv]


def _kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


# ------------------------------------------------------------------------------------------------ engine


#: parameters of :func:`score_token_sequences` that are not passed on unchanged to each process's shard
_NOT_OPTIONS = frozenset({"model", "seqs", "answer_ids", "groups", "distributed"})


def score_token_sequences(
    model: Any,
    seqs: Sequence[Sequence[int]],
    answer_ids: Sequence[int],
    *,
    groups: Sequence[Any] | None = None,
    batch_size: int = 16,
    max_batch_tokens: int | None = None,
    pad_token_id: int = 0,
    reuse_prefix: bool = True,
    fast: bool = True,
    stats: ScoringStats | None = None,
    progress: bool = False,
    distributed: bool = False,
) -> torch.Tensor:
    """Answer-token logits [N, A] (float32, model device) at the last position of each token sequence.

    ``groups`` (one key per sequence) marks sequences that share more than the global prefix (a user's
    candidates); each group's common prefix is computed once. ``max_batch_tokens`` bounds padded tokens
    per forward pass (default ``batch_size`` x mean suffix length); ``batch_size`` also caps rows per batch
    at 4x its value. ``fast=False`` / ``reuse_prefix=False`` switch optimisations off (for comparisons).
    With ``distributed`` and an initialised process group, each process scores its shard (whole groups)
    and every process receives all rows in the original order.
    """
    if distributed:
        # taken before any other local exists: every keyword option, including any added to the signature
        # later, reaches the shards
        options = {k: v for k, v in locals().items() if k not in _NOT_OPTIONS}
        from llm4rec.eval.distributed import world

        if world()[1] > 1:
            return _score_shard(model, seqs, answer_ids, groups, options)
    if not seqs:
        raise UserError("no samples to score")
    if any(len(s) == 0 for s in seqs):
        raise UserError("a prompt tokenized to nothing")
    parts = _resolve(model, fast)
    device = parts.device
    out = torch.empty(len(seqs), len(answer_ids), dtype=torch.float32, device=device)
    if stats is not None:
        stats.prompts += len(seqs)
        stats.prompt_tokens += sum(len(s) for s in seqs)
        stats.unique_tokens += unique_prefix_tokens(seqs)
        stats.fast_path = parts.decoder is not None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seqs), desc="score", unit="prompt")
    ans = torch.tensor(list(answer_ids), dtype=torch.long).to(device)
    job = _Job(parts, seqs, ans, out, batch_size, max_batch_tokens, pad_token_id, stats, bar)
    if parts.decoder is None:
        _run_generic(job)
    else:
        job.head = _head_rows(parts.head, job.ans)
        _run_fast(job, groups, reuse_prefix)
    if bar is not None:
        bar.close()
    return out


def _score_shard(
    model: Any,
    seqs: Sequence[Sequence[int]],
    answer_ids: Sequence[int],
    groups: Sequence[Any] | None,
    options: dict[str, Any],
) -> torch.Tensor:
    """Score this process's shard (whole groups); every process gets all rows back in the original order."""
    from llm4rec.eval.distributed import gather_in_order, shard_assignment, world

    rank, size = world()
    shards = shard_assignment(len(seqs), size, groups)
    mine = shards[rank]
    if mine:
        local = score_token_sequences(
            model,
            [seqs[i] for i in mine],
            answer_ids,
            groups=[groups[i] for i in mine] if groups is not None else None,
            **options,
        )
    else:
        local = torch.empty(0, len(answer_ids), device=_resolve(model, options["fast"]).device)
    return gather_in_order(local, shards, len(seqs))


@dataclass
class _Job:
    """One scoring call: the sequences, where their answer logits go, and how big a forward pass may be."""

    parts: _Parts
    seqs: Sequence[Sequence[int]]
    #: answer token ids, on the model's device
    ans: torch.Tensor
    #: [N, A] float32 answer logits, filled row by row
    out: torch.Tensor
    batch_size: int
    max_batch_tokens: int | None
    pad: int
    stats: ScoringStats | None
    bar: Any | None
    #: fast path: hidden [B, H] -> answer logits [B, A]
    head: Callable[[torch.Tensor], torch.Tensor] | None = None

    def count_pass(self, ids: torch.Tensor, real_tokens: int) -> None:
        """Record one forward pass over ``ids`` of which ``real_tokens`` were not padding."""
        if self.stats is not None:
            self.stats.tokens_run += ids.numel()
            self.stats.padding_tokens += ids.numel() - real_tokens
            self.stats.forward_passes += 1


def _budget(batch_size: int, max_batch_tokens: int | None, lengths: Sequence[int]) -> int:
    if max_batch_tokens:
        return max_batch_tokens
    return max(1, batch_size * math.ceil(sum(lengths) / max(1, len(lengths))))


def _run_generic(job: _Job) -> None:
    """Whole prompts, left padding, last position only: works for any causal LM."""
    parts, seqs = job.parts, job.seqs
    lengths = [len(s) for s in seqs]
    order = sorted(range(len(seqs)), key=lambda i: -lengths[i])
    budget = _budget(job.batch_size, job.max_batch_tokens, lengths)
    for rows in _pack(lengths, order, budget, 4 * job.batch_size):
        width = lengths[rows[0]]
        ids = torch.full((len(rows), width), job.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - lengths[i] :] = torch.tensor(seqs[i])
            mask[r, width - lengths[i] :] = 1
        kwargs: dict[str, Any] = {
            "input_ids": _to_device(ids, parts.device),
            "attention_mask": _to_device(mask, parts.device),
        }
        if parts.plain_positions:
            kwargs["position_ids"] = _to_device((mask.cumsum(-1) - 1).clamp(min=0), parts.device)
        if parts.accepts_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        logits = parts.model(**kwargs).logits[:, -1]
        job.out[_to_device(torch.tensor(rows), parts.device)] = logits.index_select(-1, job.ans).float()
        job.count_pass(ids, sum(lengths[i] for i in rows))
        if job.bar is not None:
            job.bar.update(len(rows))


def _run_fast(job: _Job, groups: Sequence[Any] | None, reuse_prefix: bool) -> None:
    """Shared prefix once, group prefixes once per group, suffixes batched; answer rows of the head only."""
    seqs = job.seqs
    lengths = [len(s) for s in seqs]
    p0, prefix_kv = _shared_prefix(job, reuse_prefix)
    group_list, gend = _group_prefix_ends(seqs, groups if reuse_prefix else None, p0)
    suffix_len = [0] * len(seqs)
    for rows, k in zip(group_list, gend):
        for i in rows:
            suffix_len[i] = lengths[i] - k
    # the budget is in new tokens per pass, sized like `batch_size` whole prompts: prefix reuse turns the
    # same memory into more rows per pass
    budget = _budget(job.batch_size, job.max_batch_tokens, lengths)

    # process groups in chunks whose group-prefix caches fit the budget (all when there are no groups)
    rem = [k - p0 for k in gend]
    gorder = sorted(range(len(group_list)), key=lambda g: -rem[g])
    with_rem = [g for g in gorder if rem[g] > 0]
    # Groups with nothing beyond the shared prefix go in a chunk of their own: a group-prefix row made
    # only of padding would attend to nothing and could fill the cache with NaN.
    # a chunk's group caches are kept while its suffixes run: bound them like one batch of whole prompts
    chunks = _pack(rem, with_rem, budget, 1 << 30, extra=p0) if with_rem else []
    if len(with_rem) < len(gorder):
        chunks.append([g for g in gorder if rem[g] == 0])
    for chunk in chunks:
        members = [group_list[g] for g in chunk]
        group = _run_group_prefixes(job, members, [gend[g] for g in chunk], p0, prefix_kv)
        start = {i: gend[g] for g in chunk for i in group_list[g]}
        order = sorted([i for rows in members for i in rows], key=lambda i: -suffix_len[i])
        for rows in _pack(suffix_len, order, budget, 8 * job.batch_size):
            _run_suffixes(job, rows, start, suffix_len, p0, prefix_kv, group)


def _shared_prefix(job: _Job, reuse_prefix: bool) -> tuple[int, Any]:
    """Run the prefix every sequence shares, once; its length (0: none worth reusing) and its cache."""
    seqs, device, decoder = job.seqs, job.parts.device, job.parts.decoder
    # Every row keeps at least its last token in the suffix, so its hidden state is computed in a batch.
    p0 = min(common_prefix(seqs), min(len(s) for s in seqs) - 1) if reuse_prefix else 0
    if p0 < MIN_PREFIX_TOKENS:
        return 0, None
    cache = _new_cache(decoder.config, None)
    ids = _to_device(torch.tensor([list(seqs[0][:p0])]), device)
    decoder(
        input_ids=ids,
        position_ids=torch.arange(p0, device=device)[None],
        cache=cache,
        use_cache=True,
    )
    if job.stats is not None:
        job.stats.tokens_run += p0
        job.stats.forward_passes += 1
        job.stats.shared_prefix_tokens = p0
    return p0, _kv(cache)


def _group_prefix_ends(
    seqs: Sequence[Sequence[int]], groups: Sequence[Any] | None, p0: int
) -> tuple[list[list[int]], list[int]]:
    """The groups' member rows, and where each group's common prefix ends (``p0`` when not worth reusing)."""
    if groups is None:
        return [list(range(len(seqs)))], [p0]
    members: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    group_list = list(members.values())
    gend = []
    for rows in group_list:
        k = common_prefix([seqs[i] for i in rows])
        k = min(k, min(len(seqs[i]) for i in rows) - 1)
        gend.append(k if k - p0 >= MIN_PREFIX_TOKENS else p0)
    return group_list, gend


@dataclass
class _GroupPrefixes:
    """One chunk's group prefixes run on top of the shared prefix: one cache row (slot) per group."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    #: [groups, longest group prefix] 1 where a slot holds a real token
    mask: torch.Tensor
    #: sequence index -> its group's slot
    slot: dict[int, int]


def _run_group_prefixes(
    job: _Job, members: list[list[int]], ends: list[int], p0: int, prefix_kv: Any
) -> _GroupPrefixes | None:
    """Run each group's prefix beyond ``p0`` (one row per group); None when no group has one."""
    device, config = job.parts.device, job.parts.decoder.config
    rem = [k - p0 for k in ends]
    rmax = max(rem)
    if rmax <= 0:
        return None
    n = len(members)
    gids = torch.full((n, rmax), job.pad, dtype=torch.long)
    gm = torch.zeros((n, rmax), dtype=torch.long)
    slot_of = {}
    for slot, rows in enumerate(members):
        gids[slot, : rem[slot]] = torch.tensor(job.seqs[rows[0]][p0 : ends[slot]])
        gm[slot, : rem[slot]] = 1
        for i in rows:
            slot_of[i] = slot
    cache = _new_cache(config, _broadcast(prefix_kv, n))
    full_mask = torch.cat([torch.ones((n, p0), dtype=torch.long), gm], 1)
    job.parts.decoder(
        input_ids=_to_device(gids, device),
        attention_mask=_to_device(full_mask, device),
        position_ids=_to_device(p0 + torch.arange(rmax)[None].expand(n, -1), device),
        cache=cache,
        use_cache=True,
    )
    job.count_pass(gids, sum(rem))
    if job.stats is not None:
        job.stats.group_prefix_tokens += sum(rem)
    return _GroupPrefixes(_kv(cache), gm, slot_of)


def _run_suffixes(
    job: _Job,
    rows: list[int],
    start: dict[int, int],
    suffix_len: list[int],
    p0: int,
    prefix_kv: Any,
    group: _GroupPrefixes | None,
) -> None:
    """One batch of suffixes on top of the cached prefixes; writes the answer logits of ``rows``."""
    device, config = job.parts.device, job.parts.decoder.config
    b = len(rows)
    width = suffix_len[rows[0]]
    ids = torch.full((b, width), job.pad, dtype=torch.long)
    smask = torch.zeros((b, width), dtype=torch.long)
    for r, i in enumerate(rows):
        ids[r, : suffix_len[i]] = torch.tensor(job.seqs[i][start[i] :])
        smask[r, : suffix_len[i]] = 1
    pos = torch.tensor([start[i] for i in rows])[:, None] + torch.arange(width)
    last = torch.tensor([suffix_len[i] - 1 for i in rows])
    gather_rows = None
    if group is not None:
        slots = torch.tensor([group.slot[i] for i in rows])
        gather_rows = _to_device(slots, device)
        past = group.kv
        mask = torch.cat([torch.ones((b, p0), dtype=torch.long), group.mask[slots], smask], 1)
    elif prefix_kv is not None:
        past = _broadcast(prefix_kv, b)
        mask = torch.cat([torch.ones((b, p0), dtype=torch.long), smask], 1)
    else:
        past = None
        mask = smask
    padded = bool((smask == 0).any()) or (group is not None and bool((group.mask == 0).any()))
    hidden = job.parts.decoder(
        input_ids=_to_device(ids, device),
        attention_mask=_to_device(mask, device) if padded else None,
        position_ids=_to_device(pos, device),
        cache=None if past is None else _new_cache(config, past, keep=False, rows=gather_rows),
        use_cache=past is not None,
    ).last_hidden_state
    h = hidden[torch.arange(b, device=device), _to_device(last, device)]
    job.out[_to_device(torch.tensor(rows), device)] = job.head(h).float()
    job.count_pass(ids, sum(suffix_len[i] for i in rows))
    if job.bar is not None:
        job.bar.update(b)


# ------------------------------------------------------------------------------------------------ tasks


def score_binary(
    model: Any,
    tokenizer: Any,
    template: PromptTemplate,
    samples: Sequence[dict[str, Any]],
    answers: Sequence[str] = ("Yes.", "No."),
    *,
    batch_size: int = 16,
    cutoff_len: int = 512,
    progress: bool = False,
    **options: Any,
) -> torch.Tensor:
    """P(first answer) per sample: softmax over the answers' first-token logits at the last prompt position.

    Returns a float32 tensor on the model's device, one score per sample, in the samples' order.
    ``options`` go to :func:`score_token_sequences` (``max_batch_tokens``, ``reuse_prefix``, ``stats``...).
    """
    logits = answer_logits(
        model,
        tokenizer,
        template,
        samples,
        answers,
        cutoff_len,
        batch_size=batch_size,
        progress=progress,
        **options,
    )
    return torch.softmax(logits, dim=-1)[:, 0]


def answer_logits(
    model: Any,
    tokenizer: Any,
    template: PromptTemplate,
    samples: Sequence[dict[str, Any]],
    answers: Sequence[str],
    cutoff_len: int,
    **options: Any,
) -> torch.Tensor:
    """Logits [N, A] of the answers' first tokens after each sample's rendered prompt (the shared core of
    the ``score_*`` functions), prompts fitted to ``cutoff_len`` by :func:`fit_prompts` (``sources``: one
    ``file:line`` per sample for its errors); other ``options`` go to :func:`score_token_sequences`."""
    if not samples:
        raise UserError("no samples to score")
    ids = answer_token_ids(tokenizer, render_prompt(template, samples[0]), answers)
    stats = options.get("stats")
    seqs = fit_prompts(
        tokenizer,
        template,
        samples,
        cutoff_len,
        sources=options.pop("sources", None),
        stats=stats.truncation if stats is not None else None,
    )
    return score_token_sequences(model, seqs, ids, pad_token_id=_pad_id(tokenizer), **options)


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            return int(v)
    return 0


def score_choices(
    model: Any,
    tokenizer: Any,
    template: PromptTemplate,
    samples: Sequence[dict[str, Any]],
    *,
    labels: Sequence[str] | None = None,
    batch_size: int = 16,
    cutoff_len: int = 512,
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
    labels = list(labels or INDEX_LETTERS)
    if k > len(labels):
        raise UserError(f"a sample has {k} candidates but only {len(labels)} index labels exist")
    logits = answer_logits(
        model,
        tokenizer,
        template,
        samples,
        labels[:k],
        cutoff_len,
        batch_size=batch_size,
        progress=progress,
        **options,
    )
    if min(counts) < k:
        valid = torch.arange(k)[None] < torch.tensor(counts)[:, None]
        logits = logits.masked_fill(~_to_device(valid, logits.device), float("-inf"))
    return torch.softmax(logits, dim=-1)


def _n_candidates(sample: dict[str, Any], i: int) -> int:
    cands = sample.get("candidates")
    if not isinstance(cands, list) or not cands:
        raise UserError(f"sample {i + 1}: a ranking sample needs a non-empty 'candidates' list")
    return len(cands)


def score_pointwise(
    model: Any,
    tokenizer: Any,
    template: PromptTemplate,
    samples: Sequence[dict[str, Any]],
    groups: Sequence[Any],
    answers: Sequence[str] = ("Yes.", "No."),
    *,
    batch_size: int = 16,
    cutoff_len: int = 512,
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
        tokenizer,
        template,
        samples,
        answers,
        groups=groups,
        batch_size=batch_size,
        cutoff_len=cutoff_len,
        progress=progress,
        **options,
    )


#: the Yes/No question asked per candidate when a ranking sample brings no ``pointwise_inputs``
POINTWISE_INSTRUCTION = 'Given the user\'s history, identify whether the user will choose the candidate by answering "Yes." or "No.".'
_POOL_LINE = re.compile(r"^\(?[A-Z][.)] ")  # "A. " (compact), "(A) " (full), "A) "


def history_text(ranking_input: str) -> str | None:
    """The part of a listwise prompt's input before its lettered candidate pool (and the pool's header line)."""
    lines = ranking_input.split("\n")
    first = next((j for j, line in enumerate(lines) if _POOL_LINE.match(line)), None)
    if first is None:
        return None
    head = lines[:first]
    if head and head[-1].rstrip().endswith(":"):
        head = head[:-1]
    return "\n".join(head).strip() or None


def pointwise_samples(samples: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int], list[int]]:
    """Expand listwise ranking samples into one Yes/No sample per candidate.

    A sample's ``pointwise_inputs`` (one input per candidate, with an optional ``pointwise_instruction``)
    are used as given. Otherwise the input is derived from the listwise prompt: its history (the text
    before the lettered pool) and ``Candidate: "<title>"`` from ``candidate_titles``, under
    :data:`POINTWISE_INSTRUCTION` (English). All candidates of a sample share the history, so
    :func:`score_pointwise` computes it once. Returns (samples, owner index per row, candidates per sample).
    """
    rows: list[dict[str, Any]] = []
    owner: list[int] = []
    counts: list[int] = []
    for i, s in enumerate(samples):
        n = _n_candidates(s, i)
        inputs = s.get("pointwise_inputs")
        instruction = s.get("pointwise_instruction", s.get("instruction", ""))
        extra: dict[str, Any] = {}
        if inputs is None:
            titles = s.get("candidate_titles")
            history = history_text(str(s.get("input", "")))
            if not isinstance(titles, list) or len(titles) != n or history is None:
                raise UserError(
                    f"sample {i + 1}: pointwise ranking needs 'pointwise_inputs' (one Yes/No input per candidate), "
                    "or 'candidate_titles' and an input whose candidates are lettered lines ('A. ...'); use "
                    "--rank-method letters, or score a grouped Yes/No file with --group-by"
                )
            inputs = [f'{history}\nCandidate: "{t}"' for t in titles]
            instruction = POINTWISE_INSTRUCTION
            text = str(s.get("input", ""))
            spans = s.get("history_spans") or []
            # the history keeps its place at the start, so its items stay droppable
            if (
                spans
                and text.startswith(history)
                and all(isinstance(x, (list, tuple)) and len(x) == 3 and x[2] <= len(history) for x in spans)
            ):
                extra = {"history_spans": spans}
        if not isinstance(inputs, list) or len(inputs) != n:
            raise UserError(f"sample {i + 1}: 'pointwise_inputs' must hold one input per candidate ({n})")
        rows.extend({"instruction": instruction, "input": text, **extra} for text in inputs)
        owner.extend([i] * n)
        counts.append(n)
    return rows, owner, counts
