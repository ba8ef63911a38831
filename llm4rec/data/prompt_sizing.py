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

    def __init__(self, tokenizer: Any, template: Any, max_tokens: int) -> None:
        self.tokenizer, self.template, self.max_tokens = tokenizer, template, max_tokens
        self.stats: dict[str, Any] = {}

    def _ids(self, sample: dict[str, Any]) -> list[int]:
        return self._encode([sample])[0]

    def _encode(self, samples: list[dict[str, Any]]) -> list[list[int]]:
        from llm4rec.data.tokenize import render_prompt

        t = self.template
        texts = [
            render_prompt(t, s) + t.answer_prefix + str(s.get("output", "")) + t.answer_suffix
            for s in samples
        ]
        eos = self.tokenizer.eos_token_id
        out = []
        for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]:
            ids = list(ids)
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            out.append(ids)
        return out

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
            for k, ids in enumerate(self._encode(block)):
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


def load_sizing_tokenizer(settings: dict[str, Any]) -> tuple[Any, Any] | None:
    """(tokenizer, family) of --tokenizer, loaded once for prompt sizing and the title cap (None without)."""
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
    from llm4rec.models.loading import load_backbone_tokenizer

    return load_backbone_tokenizer(path, settings.get("tokenizer_family") or "auto")


def prompt_sizer(settings: dict[str, Any]) -> PromptSizer | None:
    """The prompt sizer the flags ask for (None without --max-prompt-tokens)."""
    n, loaded = settings.get("max_prompt_tokens") or 0, settings.get("_backbone")
    if not n:
        return None
    if loaded is None:
        loaded = load_sizing_tokenizer(settings)
    from llm4rec.models.loading import resolve_template

    tok, fam = loaded
    path = settings["tokenizer"]
    return PromptSizer(
        tok, resolve_template(fam, settings.get("template") or "auto", settings["lang"], path), n
    )
