"""``llm4rec recommend``: the top K items of a catalogue for one user or history, scored by a checkpoint.

    llm4rec recommend --checkpoint runs/a --catalog data/ml100k --user 196 --k 10
    llm4rec recommend --checkpoint runs/a --catalog data/ml100k --history 50,172,133:0 --candidates 1,2,3

Candidates are the whole catalogue (``all``, the default), a retriever's file (the JSONL that ranking
prep's ``--candidates-file`` takes, or a plain JSON list) or a comma list of item ids. Items the user has
seen (the whole train history of ``--user``, or the ``--history`` items) are left out unless
``--keep-seen``. ``--method pointwise`` asks the TALLRec Yes/No question per candidate (the history's
prompt prefix computed once, the candidates batched); ``letters`` shows up to 26 candidates as a lettered
pool in one prompt and reads the letters' probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm4rec.cli import plain
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.serve.catalog import Catalog, HistoryItem
from llm4rec.serve.model import CheckpointInfo

METHODS = ("pointwise", "letters")


@dataclass
class Query:
    """One recommendation request: whose history, which candidates, how many results."""

    user: str | None = None
    #: history entries as :meth:`Catalog.parse_history` takes them (oldest first)
    history: list[Any] | None = None
    #: None = the whole catalogue; else item ids
    candidates: list[Any] | None = None
    k: int = 10
    keep_seen: bool = False
    method: str = "pointwise"


@dataclass
class Plan:
    """A query resolved against the catalogue: the history shown and the candidates to score."""

    history: list[HistoryItem]
    candidates: list[int]
    k: int
    method: str
    seen: set[int] = field(default_factory=set)


def plan_query(catalog: Catalog, q: Query, max_candidates: int = 0) -> Plan:
    """Resolve users and items; every problem is one :class:`UserError` naming the field."""
    if (q.user is None) == (q.history is None):
        raise UserError("user/history: give exactly one of a user id or a history")
    if q.method not in METHODS:
        raise UserError(f"method: unknown method {q.method!r}; choose one of {', '.join(METHODS)}")
    if q.k < 1:
        raise UserError(f"k: must be a positive integer, got {q.k}")
    if q.user is not None:
        history = catalog.user_history(q.user)
        seen = set(catalog.train_items(q.user))
    else:
        history = catalog.parse_history(q.history or [])
        seen = {h.index for h in history}
    if q.candidates is None:
        if max_candidates and catalog.n_items > max_candidates:
            raise UserError(
                f"candidates: the whole catalogue is {catalog.n_items} items, over the limit of "
                f"{max_candidates}; give a candidate list"
            )
        cands = list(range(catalog.n_items))
    else:
        if not q.candidates:
            raise UserError("candidates: the candidate list is empty")
        cands = catalog.items(q.candidates, "candidates")
    if not q.keep_seen:
        cands = [c for c in cands if c not in seen]
        if not cands:
            raise UserError("candidates: every candidate is in the history (use keep_seen to score them)")
    if q.method == "letters" and not 2 <= len(cands) <= 26:
        raise UserError(
            f"method: letters ranks 2 to 26 candidates (index letters A-Z), got {len(cands)}; "
            "give fewer candidates or use pointwise"
        )
    return Plan(history, cands, q.k, q.method, seen)


def ranked(
    catalog: Catalog, candidates: Sequence[int], scores: Sequence[float], k: int
) -> list[dict[str, Any]]:
    """The top ``k`` candidates by score (ties keep candidate order): rank, item id, title, score."""
    order = sorted(range(len(candidates)), key=lambda j: -scores[j])[:k]
    return [
        {
            "rank": r + 1,
            "item_id": catalog.item_ids[candidates[j]],
            "title": catalog.titles[candidates[j]],
            "score": float(scores[j]),
        }
        for r, j in enumerate(order)
    ]


def history_view(catalog: Catalog, history: Sequence[HistoryItem]) -> list[dict[str, Any]]:
    """The history as shown in the prompt (oldest first), for responses."""
    return [
        {"item_id": catalog.item_ids[h.index], "title": catalog.titles[h.index], "liked": bool(h.label)}
        for h in history
    ]


def check_compatible(info: CheckpointInfo, catalog: Catalog) -> None:
    """A catalogue from another dataset than the checkpoint was trained on, or in another language, is
    an error (the training data's prep ``meta.json`` is found beside its task directory)."""
    if info.lang != catalog.lang:
        raise UserError(
            f"--catalog: {catalog.path} was prepared in {catalog.lang!r} but {info.path} was trained "
            f"on {info.lang!r} prompts"
        )
    if not info.train_data:
        return
    meta = Path(info.train_data).resolve().parent.parent / "meta.json"
    if not meta.is_file():
        return
    try:
        sources = json.loads(meta.read_text(encoding="utf-8")).get("sources")
    except (ValueError, AttributeError):
        return
    if sources and catalog.meta.get("sources") and sources != catalog.meta["sources"]:
        raise UserError(
            f"--catalog: {catalog.path} comes from other source files than {info.path}'s training data "
            f"({meta}); give the catalogue of the dataset the checkpoint was trained on"
        )


def score_plan(model: Any, catalog: Catalog, p: Plan) -> list[float]:
    """Scores of a plan's candidates with a :class:`llm4rec.serve.model.LoadedModel` (one caller)."""
    if p.method == "letters":
        return model.score_letters([catalog.letters_sample(p.history, p.candidates)])[0]
    samples = catalog.yes_no_samples(p.history, p.candidates)
    return model.score_yes_no(samples, [0] * len(samples))


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    """The ``llm4rec recommend`` argument parser."""
    ap = argparse.ArgumentParser(
        prog="llm4rec recommend",
        description=plain(__doc__.split("\n\n")[0]),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("--checkpoint", required=True, type=Path, help="adapter or model directory")
    ap.add_argument("--catalog", required=True, type=Path, help="a `llm4rec prep` output directory")
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user of the catalogue: their train history is used")
    who.add_argument(
        "--history", help="item ids, oldest first, comma-separated; ID:0 marks a disliked item (ID = ID:1)"
    )
    ap.add_argument(
        "--candidates",
        default="all",
        help="all (the catalogue), a retriever's candidates FILE, or ITEM,ITEM,...",
    )
    ap.add_argument("--k", type=int, default=10, help="how many items to print (default 10)")
    ap.add_argument("--method", choices=METHODS, default="pointwise", help="Yes/No per candidate, or letters")
    ap.add_argument("--keep-seen", action="store_true", help="keep items of the history among the candidates")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return ap


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def query_from_args(args: argparse.Namespace, catalog: Catalog) -> Query:
    """The query the command line asks for."""
    cands: list[Any] | None
    if args.candidates == "all":
        cands = None
    elif Path(args.candidates).is_file():
        cands = catalog.retriever_candidates(Path(args.candidates), args.user)
    else:
        cands = _split(args.candidates)
        if not cands:
            raise UserError(f"--candidates: no item ids in {args.candidates!r}")
    history = _split(args.history) if args.history is not None else None
    if history is not None and not history:
        raise UserError("--history: the history is empty; give at least one item id")
    return Query(args.user, history, cands, args.k, args.keep_seen, args.method)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llm4rec recommend``."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    from llm4rec.serve.model import LoadedModel, read_info

    info = read_info(args.checkpoint)
    catalog = Catalog.load(args.catalog)
    check_compatible(info, catalog)
    p = plan_query(catalog, query_from_args(args, catalog))
    model = LoadedModel(info)
    top = ranked(catalog, p.candidates, score_plan(model, catalog, p), p.k)
    if args.json:
        out = {
            "user": args.user,
            "history": history_view(catalog, p.history),
            "method": p.method,
            "candidates_scored": len(p.candidates),
            "recommendations": top,
        }
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(f"{len(p.candidates)} candidates scored ({p.method}); top {len(top)}:")
    width = max(len(r["item_id"]) for r in top)
    for r in top:
        print(f"{r['rank']:>3}  {r['item_id']:<{width}}  {r['score']:.4f}  {r['title']}")
    sys.stdout.flush()
    return 0
