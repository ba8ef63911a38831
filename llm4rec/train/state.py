"""Where a training run stands: the counters ``checkpoint-last/trainer_state.json`` saves and resume restores."""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError


@dataclass
class TrainState:
    """The run's position and its best validation so far (the keys of ``trainer_state.json``)."""

    #: optimizer steps taken
    step: int = 0
    #: epochs completed
    epoch: int = 0
    #: micro-batches of the current epoch already run (resume continues after them)
    micro_in_epoch: int = 0
    #: the best validation AUC so far (None until a validation ran)
    best_auc: float | None = None
    #: the step at which the best adapter was kept
    best_step: int = 0
    #: validations in a row without an AUC gain (early stopping counts them)
    bad_evals: int = 0

    def to_json(self) -> str:
        """The ``trainer_state.json`` text."""
        return json.dumps(dataclasses.asdict(self), indent=2)

    def save(self, path: Path) -> None:
        """Write ``trainer_state.json`` (inside a checkpoint directory that is renamed into place whole)."""
        path.write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> TrainState:
        """Read ``trainer_state.json``; a file that is not JSON, lacks a key, has one llm4rec does not know
        or a value of the wrong type is a :class:`UserError` naming the file and the key."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: cannot read the training state ({exc})") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = "trainer_state.json") -> TrainState:
        """The state from its JSON object, checked key by key (see :meth:`load`)."""
        if not isinstance(data, dict):
            raise UserError(
                f"{where}: expected a JSON object of training counters, got {type(data).__name__}"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(
                    f"{where}: unknown key {key!r}{hint}; a checkpoint of another llm4rec version?"
                )
        missing = [name for name in fields if name not in data]
        if missing:
            raise UserError(f"{where}: missing key {missing[0]!r}; a checkpoint of another llm4rec version?")
        for name, value in data.items():
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            if name == "best_auc":
                ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
            if not ok:
                want = "a number or null" if name == "best_auc" else "a non-negative integer"
                raise UserError(f"{where}: {name!r} is {value!r}; expected {want}")
        return cls(**data)
