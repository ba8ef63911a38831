"""A synthetic interaction log with learnable structure, written in the MovieLens-100K layout.

Generative model (all draws from one seeded ``numpy.random.Generator``):

* item ``i`` has one genre ``g(i)`` and a quality ``q_i ~ N(0, 1)``; its title names the genre;
* user ``u`` has a genre affinity ``a_{u,g} ~ N(0, 1)`` for every genre;
* the latent appeal is ``s_{u,i} = w_q * q_i + w_a * a_{u,g(i)}`` and the observed rating is
  ``s_{u,i} + e`` (``e ~ N(0, noise^2)``) cut into 1..5 stars at fixed quantiles;
* each user rates a random number of items, drawn without replacement with popularity ``∝ exp(0.3 q_i)``,
  at increasing timestamps.

The *oracle AUC* is the AUC of the noiseless appeal ``s`` for the label ``rating > 3``: no model can
beat it in expectation. It is written to ``synth.json`` (about 0.96 at the defaults).

The same process also simulates a disjoint set of *corpus users* on the same items. Their log is written
in the same layout under ``pretrain/`` and as plain sentences in ``corpus.txt`` ("Loved "X". Disliked
"Y". ..."). The demo trains its tokenizer on ``corpus.txt`` and pre-trains its tiny base on the corpus
users' TALLRec samples, a stand-in for what a real LLM has learned before fine-tuning; neither contains
the users the adapter is trained or evaluated on.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from llm4rec.config import doc
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.eval.metrics import auc
from llm4rec.io import atomic_dir

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Western")
#: syllables for made-up one-word titles: every item gets its own word, as real titles are unique
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "do",
    "sul",
    "ta",
    "ne",
    "bri",
    "cor",
    "fa",
    "zu",
    "mel",
    "to",
    "an",
    "ris",
    "vo",
    "pe",
    "gal",
]


@dataclass
class SynthConfig:
    """Parameters of the synthetic log (each field is also a ``llm4rec synth`` flag)."""

    users: int = doc("users whose log is written (train, valid and test)", 900)
    items: int = doc("items in the catalogue", 40)
    min_ratings: int = doc("fewest ratings per user", 15)
    max_ratings: int = doc("most ratings per user", 38)
    quality_weight: float = doc("weight w_q of the item quality in the latent appeal", 1.6)
    affinity_weight: float = doc("weight w_a of the user's genre affinity in the latent appeal", 1.2)
    noise: float = doc("standard deviation of the rating noise", 0.7)
    corpus_users: int = doc("disjoint users simulated for pretrain/ and corpus.txt", 1500)
    seed: int = doc("seed of every draw", 0)


def _titles(rng: np.random.Generator, n: int) -> list[str]:
    words = [
        (a + b + c).capitalize() for a in _SYLLABLES for b in _SYLLABLES for c in _SYLLABLES if a != b != c
    ]
    if n > len(words):
        raise UserError(f"--items: at most {len(words)} synthetic titles are available, asked for {n}")
    idx = rng.permutation(len(words))[:n]
    return [words[k] for k in idx]


def _simulate(
    rng: np.random.Generator, cfg: SynthConfig, n_users: int, genre: np.ndarray, quality: np.ndarray
):
    """Yield (user, items, ratings, appeal) per user under the generative model."""
    pop = np.exp(0.3 * quality)
    pop /= pop.sum()
    # rating cut points on the appeal+noise scale: about 44% of ratings are 4-5 stars, as in MovieLens
    cuts = np.array([-1.6, -0.8, 0.25, 1.1])
    for u in range(n_users):
        aff = rng.normal(0.0, 1.0, len(GENRES))
        n = int(rng.integers(cfg.min_ratings, cfg.max_ratings + 1))
        items = rng.choice(len(quality), size=n, replace=False, p=pop)
        appeal = cfg.quality_weight * quality[items] + cfg.affinity_weight * aff[genre[items]]
        observed = appeal + rng.normal(0.0, cfg.noise, n)
        ratings = 1 + np.searchsorted(cuts, observed)
        yield u, items, ratings, appeal


def generate(out: Path, cfg: SynthConfig) -> dict:
    """Write ``u.data``, ``u.item``, ``u.genre``, ``pretrain/``, ``corpus.txt`` and ``synth.json`` into ``out``."""
    rng = np.random.default_rng(cfg.seed)
    genre = rng.integers(0, len(GENRES), cfg.items)
    quality = rng.normal(0.0, 1.0, cfg.items)
    base_titles = _titles(rng, cfg.items)
    titles = [f"{t} ({GENRES[g]})" for t, g in zip(base_titles, genre)]
    data_lines, all_appeal, all_labels = [], [], []
    t0 = 874_724_710  # MovieLens-100K's first timestamp (Sept 1997), so dates look familiar
    for u, items, ratings, appeal in _simulate(rng, cfg, cfg.users, genre, quality):
        ts = t0 + np.cumsum(rng.integers(60, 86_400, len(items)))
        for i, r, t in zip(items, ratings, ts):
            data_lines.append(f"{u + 1}\t{i + 1}\t{r}\t{t}\n")
        all_appeal.append(appeal)
        all_labels.append(ratings > 3)
    appeal = np.concatenate(all_appeal)
    labels = np.concatenate(all_labels).astype(int)
    corpus, corpus_lines = [], []
    for u, items, ratings, _ in _simulate(rng, cfg, cfg.corpus_users, genre, quality):
        ts = t0 + np.cumsum(rng.integers(60, 86_400, len(items)))
        for i, r, t in zip(items, ratings, ts):
            corpus_lines.append(f"{u + 1}\t{i + 1}\t{r}\t{t}\n")
        liked = [titles[i] for i, r in zip(items, ratings) if r > 3]
        disliked = [titles[i] for i, r in zip(items, ratings) if r <= 3]
        for k in range(0, len(items), 8):
            chunk = [(titles[i], r > 3) for i, r in zip(items[k : k + 8], ratings[k : k + 8])]
            corpus.append(" ".join(f'{"Loved" if ok else "Disliked"} "{t}".' for t, ok in chunk))
        if liked and disliked:
            corpus.append(f'A viewer who enjoyed "{liked[0]}" did not enjoy "{disliked[0]}".')
    stats = {
        "config": asdict(cfg),
        "ratings": len(data_lines),
        "positive_rate": float(labels.mean()),
        "oracle_auc": auc(appeal, labels),
        "genres": list(GENRES),
    }
    with atomic_dir(out) as tmp:
        flags = ["|".join("1" if g == k else "0" for k in range(len(GENRES))) for g in genre]
        item_lines = [
            f"{i + 1}|{titles[i]}|01-Jan-1995||http://example.invalid/{i + 1}|0|{flags[i]}\n"
            for i in range(cfg.items)
        ]
        genre_text = "unknown|0\n" + "".join(f"{g}|{k + 1}\n" for k, g in enumerate(GENRES))
        for d, lines in ((tmp, data_lines), (tmp / "pretrain", corpus_lines)):
            d.mkdir(exist_ok=True)
            (d / "u.data").write_text("".join(lines), encoding="iso-8859-1")
            (d / "u.item").write_text("".join(item_lines), encoding="iso-8859-1")
            (d / "u.genre").write_text(genre_text)
        (tmp / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
        (tmp / "synth.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


@exit_on_user_error
def main(argv: list[str]) -> int:
    """``llm4rec synth --out DIR``: write a synthetic log in MovieLens-100K layout."""
    ap = argparse.ArgumentParser(
        prog="llm4rec synth", description="Generate a synthetic MovieLens-100K-style log."
    )
    ap.add_argument("--out", required=True, type=Path, help="output directory (written atomically)")
    for f in fields(SynthConfig):
        ap.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(f.default),
            default=f.default,
            help=f"{f.metadata['doc']} (default {f.default})",
        )
    args = ap.parse_args(argv)
    cfg = SynthConfig(**{f: getattr(args, f) for f in asdict(SynthConfig())})
    if cfg.users < 1 or cfg.items < 2 or not 1 <= cfg.min_ratings <= cfg.max_ratings <= cfg.items:
        raise UserError("need users >= 1, items >= 2 and 1 <= min-ratings <= max-ratings <= items")
    stats = generate(args.out, cfg)
    print(
        f"wrote {stats['ratings']} ratings of {cfg.users} users on {cfg.items} items to {args.out} "
        f"(positive rate {stats['positive_rate']:.3f}, oracle AUC {stats['oracle_auc']:.4f})"
    )
    return 0
