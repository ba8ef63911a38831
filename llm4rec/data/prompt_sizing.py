"""Prompt sizing at prep time: each sample's oldest history items dropped until it fits the backbone's budget."""

from __future__ import annotations

from typing import Any

import polars as pl

from llm4rec.errors import UserError


class PromptSizer:
    """Drops each sample's oldest history items until its training sequence (prompt + answer + end-of-turn
    text + EOS, in the backbone's template) fits ``max_tokens``: the same rule training applies
    (:func:`llm4rec.data.tokenize.fit_to_budget`), applied once, before training starts."""

    #: samples tokenized at once
    BLOCK = 4096

    def __init__(self, backbone: Any, max_tokens: int) -> None:
        self.backbone, self.max_tokens = backbone, max_tokens
        self.stats: dict[str, Any] = {}

    def _ids(self, sample: dict[str, Any]) -> list[int]:
        return self.backbone.train_ids([sample])[0]

    def apply(self, rows: pl.DataFrame, task: str, split: str) -> pl.DataFrame:
        """``rows`` with over-long samples shortened (input, history and history_spans updated)."""
        from llm4rec.data.tokenize import OverlongPrompt, fit_to_budget

        st = self.stats.setdefault(task, {"samples": 0, "shortened": 0, "items_dropped": 0})
        st["samples"] += rows.height
        if rows.height == 0 or "history_spans" not in rows.columns:
            return rows
        cols = ["instruction", "input", "output", "history", "history_spans"]
        fitted: dict[int, tuple[dict[str, Any], int]] = {}
        # in blocks: token ids of a whole chunk at once would hold gigabytes of Python ints
        for a in range(0, rows.height, self.BLOCK):
            block = rows.slice(a, self.BLOCK).select(cols).to_dicts()
            for k, ids in enumerate(self.backbone.train_ids(block)):
                if len(ids) <= self.max_tokens:
                    continue
                where = f"{task}/{split}: sample of user {rows['user_id'][a + k]!r}"
                try:
                    f = fit_to_budget(
                        block[k],
                        self._ids,
                        self.max_tokens,
                        where,
                        ids=ids,
                        limit=f"--max-prompt-tokens {self.max_tokens} (prompt, answer and EOS together)",
                    )
                except OverlongPrompt as exc:
                    raise UserError(str(exc)) from None
                fitted[a + k] = (f.sample, f.dropped)  # not the ids: they would add up to gigabytes
        if not fitted:
            return rows
        inputs, hist, spans = (rows[c].to_list() for c in ("input", "history", "history_spans"))
        for i, (sample, dropped) in fitted.items():
            inputs[i] = sample["input"]
            hist[i] = sample["history"]
            spans[i] = sample["history_spans"]
            st["shortened"] += 1
            st["items_dropped"] += dropped
        return rows.with_columns(
            pl.Series("input", inputs, dtype=rows.schema["input"]),
            pl.Series("history", hist, dtype=rows.schema["history"]),
            pl.Series("history_spans", spans, dtype=rows.schema["history_spans"]),
        )


def load_sizing_tokenizer(settings: dict[str, Any]) -> Any | None:
    """The backbone of --tokenizer (:func:`llm4rec.models.backbone.tokenizer_backbone`: its tokenizer,
    template and answers for ``--lang``), loaded once for prompt sizing and the title cap (None without)."""
    n, cap, path = (
        settings.get("max_prompt_tokens") or 0,
        settings.get("max_title_tokens") or 0,
        settings.get("tokenizer"),
    )
    if not path:
        if n:
            raise UserError("--max-prompt-tokens: give the backbone's tokenizer with --tokenizer DIR")
        if cap:
            raise UserError("--max-title-tokens: give the backbone's tokenizer with --tokenizer DIR")
        return None
    if not (n or cap):
        raise UserError("--tokenizer: only used with --max-prompt-tokens N or --max-title-tokens N")
    if n and n < 16:
        raise UserError(f"--max-prompt-tokens: need at least 16 tokens, got {n}")
    from llm4rec.models.backbone import tokenizer_backbone

    return tokenizer_backbone(
        path,
        settings.get("tokenizer_family") or "auto",
        settings.get("template") or "auto",
        settings["lang"],
        cutoff_len=n,
    )


def prompt_sizer(settings: dict[str, Any]) -> PromptSizer | None:
    """The prompt sizer the flags ask for (None without --max-prompt-tokens)."""
    n, backbone = settings.get("max_prompt_tokens") or 0, settings.get("_backbone")
    if not n:
        return None
    return PromptSizer(backbone if backbone is not None else load_sizing_tokenizer(settings), n)
