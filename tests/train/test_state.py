"""The run's counters: ``trainer_state.json`` written from :class:`TrainState`, read back, bad files refused."""

from __future__ import annotations

import json

import pytest

from llm4rec.errors import UserError
from llm4rec.train.state import TrainState


def test_the_file_keeps_its_keys_and_round_trips(tmp_path):
    state = TrainState(step=12, epoch=1, micro_in_epoch=3, best_auc=0.71, best_step=9, bad_evals=1)
    path = tmp_path / "trainer_state.json"
    state.save(path)
    # the layout checkpoints have always had: resume of an existing checkpoint-last keeps working
    old = {"step": 12, "epoch": 1, "micro_in_epoch": 3, "best_auc": 0.71, "best_step": 9, "bad_evals": 1}
    assert path.read_text() == json.dumps(old, indent=2)
    assert TrainState.load(path) == state
    fresh = tmp_path / "fresh.json"
    TrainState().save(fresh)
    assert TrainState.load(fresh) == TrainState() and json.loads(fresh.read_text())["best_auc"] is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"not valid JSON \(line 1"),
        ("[1, 2]", "expected a JSON object of training counters, got list"),
        (
            '{"step": 1, "epoch": 0, "micro_in_epoch": 0, "best_auc": null, "best_step": 0, "bad_eval": 0}',
            "unknown key 'bad_eval' \\(did you mean 'bad_evals'\\?\\)",
        ),
        ('{"step": 1, "epoch": 0}', "missing key 'micro_in_epoch'"),
        (
            '{"step": "1", "epoch": 0, "micro_in_epoch": 0, "best_auc": null, "best_step": 0, "bad_evals": 0}',
            "'step' is '1'; expected a non-negative integer",
        ),
        (
            '{"step": 1, "epoch": 0, "micro_in_epoch": 0, "best_auc": "high", "best_step": 0, "bad_evals": 0}',
            "'best_auc' is 'high'; expected a number or null",
        ),
    ],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "trainer_state.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        TrainState.load(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
