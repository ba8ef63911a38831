"""SASRec (Kang & McAuley, 2018): a causal self-attention encoder over the item sequence, in torch.

No maintained package fits this project's environment: RecBole's SASRec pulls in its own trainer,
config system and pinned dependencies, and RecTools needs numpy < 2. The model is small enough to own:
item and position embeddings, ``layers`` pre-norm Transformer blocks with a causal mask, and the next
item predicted at every position by a dot product with the (shared) item embeddings, trained with
cross-entropy against 256 items drawn uniformly per batch (a sampled softmax: on a 1,682-item
catalogue the full softmax made the output layer two thirds of the training time on a CPU).

Training sequences are each train user's events in time order, cut into windows of ``max_len + 1``
items. A sample is scored from its own history: the output at its last history position ranks the
catalogue.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from llm4rec.baselines.data import TrainLog


class _Net(nn.Module):
    """Embeddings, causal Transformer blocks, final norm; item 0 is padding (catalogue index i -> i + 1)."""

    def __init__(self, n_items: int, dim: int, max_len: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        # unit-variance inputs after the sqrt(dim) scale, and initial logits h.e of about unit size
        # (the default N(0, 1) rows made them ~sqrt(dim) and the first epochs were spent undoing that)
        for emb in (self.items, self.positions):
            nn.init.normal_(emb.weight, std=dim**-0.5)
        with torch.no_grad():
            self.items.weight[0] = 0.0
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=dim * 2, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.bias = nn.Parameter(torch.zeros(n_items + 1))  # per-item bias: popularity is learnt at once

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, dim] of left-padded sequences [B, L] (0 = padding)."""
        b, n = seq.shape
        x = self.items(seq) * math.sqrt(self.items.embedding_dim) + self.positions.weight[None, -n:]
        pad = seq == 0
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).triu(1)
        # a position sees itself and the real items before it (never padding), so no row is all masked
        blocked = causal[None] | (pad[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=seq.device)[None])
        mask = torch.zeros(b, n, n, device=seq.device).masked_fill(blocked, float("-inf"))
        h = self.encoder(self.dropout(x), mask=mask.repeat_interleave(self.heads, 0))
        return self.norm(h)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores of every catalogue item (padding row excluded)."""
        return h @ self.items.weight[1:].T + self.bias[1:]


def _left_pad(seqs: list[np.ndarray], length: int) -> torch.Tensor:
    """Each sequence's last ``length`` items shifted by one (0 = padding), left-padded."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[r, length - len(s) :] = s + 1
    return torch.from_numpy(out)


class SASRec:
    """The SASRec baseline: ``fit`` on the train sequences, ``score`` from each sample's history."""

    def __init__(
        self,
        dim: int = 64,
        max_len: int = 20,
        layers: int = 2,
        heads: int = 1,
        dropout: float = 0.2,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 2e-3,
        negatives: int = 256,
    ):
        self.dim, self.max_len, self.layers, self.heads, self.dropout = dim, max_len, layers, heads, dropout
        self.epochs, self.batch_size, self.lr, self.negatives = epochs, batch_size, lr, negatives
        self.net: _Net | None = None

    def _windows(self, log: TrainLog) -> torch.Tensor:
        """Windows of ``max_len + 1`` events (the last window of a user ends at the user's last event)."""
        windows = []
        for s in log.sequences():
            if len(s) < 2:
                continue
            for end in range(len(s), 1, -self.max_len):
                windows.append(s[max(0, end - self.max_len - 1) : end])
        return _left_pad(windows, self.max_len + 1)

    def fit(self, log: TrainLog, seed: int) -> None:
        """Next-item cross-entropy at every position, Adam, ``epochs`` passes over the windows."""
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        self.net = _Net(log.n_items, self.dim, self.max_len, self.layers, self.heads, self.dropout)
        data = self._windows(log)
        with torch.no_grad():  # the item bias starts at log popularity, so training adds what order tells
            counts = np.bincount(log.items, minlength=log.n_items).astype(np.float32)
            self.net.bias[1:] = torch.from_numpy(np.log1p(counts))
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.net.train()
        for _ in range(self.epochs if len(data) else 0):
            for idx in torch.randperm(len(data), generator=gen).split(self.batch_size):
                batch = data[idx]
                inputs, targets = batch[:, :-1], batch[:, 1:]
                keep = (inputs != 0) & (targets != 0)
                h = self.net(inputs)[keep]
                loss = self._loss(h, targets[keep], gen)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()

    def _loss(self, h: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Cross-entropy of the next item against ``negatives`` items drawn uniformly for the whole batch
        (sampled softmax; the full catalogue when it is smaller). A drawn item equal to a position's own
        target is masked out for that position."""
        assert self.net is not None
        n_items = self.net.items.num_embeddings - 1
        if n_items <= self.negatives:
            return nn.functional.cross_entropy(self.net.logits(h), targets - 1)
        neg = torch.randint(1, n_items + 1, (self.negatives,), generator=gen)
        emb = self.net.items.weight
        bias = self.net.bias
        pos = (h * emb[targets]).sum(-1, keepdim=True) + bias[targets, None]
        other = (h @ emb[neg].T + bias[neg]).masked_fill(neg[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([pos, other], 1)
        return nn.functional.cross_entropy(logits, torch.zeros(len(h), dtype=torch.long))

    @torch.no_grad()
    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """The catalogue's scores after each history's last item (batches of 512)."""
        assert self.net is not None, "fit first"
        out = []
        for a in range(0, len(histories), 512):
            seq = _left_pad(histories[a : a + 512], self.max_len)
            out.append(self.net.logits(self.net(seq)[:, -1]).numpy())
        n_items = self.net.items.num_embeddings - 1
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, n_items), np.float32)

    def params(self) -> dict[str, Any]:
        """Architecture and training settings."""
        keys = ("dim", "max_len", "layers", "heads", "dropout", "epochs", "batch_size", "lr", "negatives")
        return {k: getattr(self, k) for k in keys}
