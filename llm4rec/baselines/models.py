"""Classic recommenders with one interface: ``fit(log, seed)``, then ``score(histories)`` over the catalogue.

``score`` takes each sample's own history (catalogue indices) and returns a [samples, items] float32
matrix; higher means more likely. Which model is which, and why:

- ``popular``: the number of train events of each item (the same ranking for every user).
- ``ease``: EASE (Steck, 2019), an item-item linear model with a closed form,
  ``B = I - P diag(1 / diag(P))`` with ``P = (X^T X + lambda I)^-1``, score ``h B`` for the history
  vector ``h``. A few lines of numpy, so it is written here rather than taken from a library.
- ``als``: implicit-feedback matrix factorisation by alternating least squares from the ``implicit``
  package (maintained, compiled, installs on Python 3.11 with numpy 2). A sample's user vector is
  solved from its own history (``recalculate_user``), so users the train split never saw are scored too.
- ``sasrec``: a self-attentive sequential model (:mod:`llm4rec.baselines.sasrec`).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from llm4rec.baselines.data import TrainLog


class Recommender(Protocol):
    """What every baseline provides."""

    def fit(self, log: TrainLog, seed: int) -> None:
        """Fit on the train log."""

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """[len(histories), n_items] scores."""

    def params(self) -> dict[str, Any]:
        """The hyper-parameters, for the report."""


def history_matrix(histories: list[np.ndarray], n_items: int) -> Any:
    """The binary [samples, items] CSR matrix of the histories."""
    import scipy.sparse as sp

    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate(histories) if histories else np.zeros(0, dtype=np.int64)
    m = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(histories), n_items))
    m.data[:] = 1.0
    return m


class Popular:
    """Item popularity: the count of each item's train events."""

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.float32)

    def fit(self, log: TrainLog, seed: int) -> None:
        """Count the events per item."""
        self.counts = np.bincount(log.items, minlength=log.n_items).astype(np.float32)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """The counts, for every sample."""
        return np.broadcast_to(self.counts, (len(histories), len(self.counts))).copy()

    def params(self) -> dict[str, Any]:
        """No parameters."""
        return {}


class EASE:
    """EASE: ``B = I - P / diag(P)``, ``P = (X^T X + lambda I)^-1`` (zero diagonal), score ``h B``."""

    def __init__(self, l2: float = 250.0) -> None:
        self.l2 = l2
        self.b = np.zeros((0, 0), dtype=np.float32)

    def fit(self, log: TrainLog, seed: int) -> None:
        """The closed-form item-item weights (one dense items x items inverse)."""
        x = log.matrix()
        g = (x.T @ x).toarray().astype(np.float64)
        g[np.diag_indices_from(g)] += self.l2
        p = np.linalg.inv(g)
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.b = b.astype(np.float32)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """``h B`` per sample."""
        return np.asarray(history_matrix(histories, self.b.shape[0]) @ self.b, dtype=np.float32)

    def params(self) -> dict[str, Any]:
        """The L2 weight."""
        return {"l2": self.l2}


class ALS:
    """Implicit-feedback ALS (``implicit.als.AlternatingLeastSquares``); users solved from their history."""

    def __init__(
        self, factors: int = 64, regularization: float = 0.05, iterations: int = 15, alpha: float = 2.0
    ):
        self.factors, self.regularization, self.iterations, self.alpha = (
            factors,
            regularization,
            iterations,
            alpha,
        )
        self.model: Any = None
        self.n_items = 0

    def fit(self, log: TrainLog, seed: int) -> None:
        """Alternating least squares on the binary user x item matrix."""
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.n_items = log.n_items
        # implicit's own threads do the work; BLAS threads would only contend (implicit warns otherwise)
        with threadpool_limits(1, "blas"):
            self.model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                iterations=self.iterations,
                alpha=self.alpha,
                random_state=seed,
                num_threads=1,  # the same factors on every machine
            )
            self.model.fit(log.matrix(), show_progress=False)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """Item factors times each sample's user factors (solved from its history)."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            users = self.model.recalculate_user(
                np.arange(len(histories)), history_matrix(histories, self.n_items)
            )
        return (users @ self.model.item_factors.T).astype(np.float32)

    def params(self) -> dict[str, Any]:
        """Factors, regularisation, iterations, confidence weight."""
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "alpha": self.alpha,
        }


def build(method: str) -> Recommender:
    """A fresh model of ``method`` (see :data:`METHODS`)."""
    if method == "sasrec":
        from llm4rec.baselines.sasrec import SASRec

        return SASRec()
    return {"popular": Popular, "ease": EASE, "als": ALS}[method]()


METHODS = {
    "popular": "item popularity (train events per item)",
    "ease": "EASE item-item model (closed form, numpy)",
    "als": "implicit ALS matrix factorisation (implicit package)",
    "sasrec": "SASRec self-attentive sequential model (torch)",
}
"""``--method`` choices and what each is."""
