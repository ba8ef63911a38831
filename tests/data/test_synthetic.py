"""The synthetic log: ML-100K layout, deterministic, with the structure its docstring promises."""

import numpy as np

from llm4rec.data.synthetic import SynthConfig, generate


def test_layout_determinism_and_oracle(tmp_path):
    cfg = SynthConfig(users=120, items=80, corpus_users=20, seed=3)
    s1 = generate(tmp_path / "a", cfg)
    s2 = generate(tmp_path / "b", cfg)
    for name in ("u.data", "u.item", "u.genre", "corpus.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    rows = np.loadtxt(tmp_path / "a" / "u.data", dtype=np.int64)
    assert rows.shape[1] == 4 and len(rows) == s1["ratings"] == s2["ratings"]
    assert set(np.unique(rows[:, 2])) <= {1, 2, 3, 4, 5}
    # per user, timestamps strictly increase in file order
    for u in np.unique(rows[:, 0]):
        ts = rows[rows[:, 0] == u, 3]
        assert np.all(np.diff(ts) > 0)
    items = (tmp_path / "a" / "u.item").read_text(encoding="iso-8859-1").splitlines()
    assert len(items) == 80 and all(len(line.split("|")) == 5 + 1 + 6 for line in items)
    assert 0.3 < s1["positive_rate"] < 0.7
    assert 0.75 < s1["oracle_auc"] < 1.0


def test_noise_lowers_the_oracle(tmp_path):
    lo = generate(tmp_path / "lo", SynthConfig(users=150, items=60, corpus_users=5, noise=0.2))
    hi = generate(tmp_path / "hi", SynthConfig(users=150, items=60, corpus_users=5, noise=2.0))
    assert lo["oracle_auc"] > hi["oracle_auc"] + 0.1
