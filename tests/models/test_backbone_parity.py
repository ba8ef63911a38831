"""Parity of every entry point: training, `llm4rec evaluate` (trained adapter and bare model), `show-prompt`
and data prep's sizing see the same template, answer words, cutoff and token ids for the same samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llm4rec.cli import main as cli
from llm4rec.config import recipe_from_dict
from llm4rec.data.tokenize import history_spans
from llm4rec.models.registry import TEMPLATES, get_family
from llm4rec.train.loop import train
from tests.data.logs import random_events, read, write_ml100k
from tests.data.logs import run as prep

#: the cutoff every entry point uses: short enough that some samples lose history
CUTOFF = 150


def _cli(argv: list, capsys) -> tuple[int, str, str]:
    try:
        code = cli([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    return write_ml100k(tmp_path_factory.mktemp("parity") / "src", random_events(16, 40, seed=3, lo=14), 40)


@pytest.fixture(params=["llama", "qwen2"])
def backbone(request, tmp_path) -> tuple[str, Path, str]:
    """(family, model directory, the template its entry points should all use). The Qwen2 copy records
    ChatML in its llm4rec.json (a template with an answer suffix, chosen by the record, not the default)."""
    family = request.param
    model = request.getfixturevalue(f"tiny_{family}")
    if family == "llama":
        return family, model, get_family(family).default_template["en"]
    copy = tmp_path / "qwen2-chatml"
    shutil.copytree(model, copy)
    (copy / "llm4rec.json").write_text(json.dumps({"family": "qwen2", "template": "chatml"}))
    return family, copy, "chatml"


def test_every_entry_point_sees_the_same_prompts(backbone, log, tmp_path, capsys):
    family, model, template = backbone
    data = tmp_path / "data"
    assert prep("movielens", "--src", log, "--task", "tallrec", "--out", data) == 0
    sized = tmp_path / "sized"
    sizing = ["--max-prompt-tokens", CUTOFF, "--tokenizer", model]
    assert prep("movielens", "--src", log, "--task", "tallrec", *sizing, "--out", sized) == 0
    train_rows, test_file = read(data / "tallrec" / "train.jsonl"), data / "tallrec" / "test.jsonl"
    test_rows = read(test_file)[:12]
    test_file.write_text("".join(json.dumps(r) + "\n" for r in test_rows))

    out = tmp_path / "run"
    recipe = {
        "model": {"path": str(model), "load_in_4bit": False, "compute_dtype": "float32"},
        "lora": {"r": 4, "alpha": 8, "targets": "qv"},
        "data": {"train": str(data / "tallrec" / "train.jsonl"), "cutoff_len": CUTOFF},
        "train": {"output_dir": str(out), "max_steps": 1, "micro_batch_size": 4, "batch_size": 4},
        "logging": {"progress_bar": False},
    }
    summary = train(recipe_from_dict(recipe))
    capsys.readouterr()

    # training: what it records, and how many training sequences it had to shorten
    record = json.loads((out / "llm4rec.json").read_text())
    fam = get_family(family)
    prefix = TEMPLATES[template].answer_prefix
    answers = [prefix + a for a in fam.answers["en"]]
    assert record["family"] == family and record["template"] == template and record["answers"] == answers
    # prep sized the same sequences (prompt + answer + suffix + EOS) to the same budget: it shortened
    # exactly the samples training shortens, by the same number of history items
    sized_rows = read(sized / "tallrec" / "train.jsonl")
    assert len(sized_rows) == len(train_rows)
    short = [(a, b) for a, b in zip(train_rows, sized_rows) if a["input"] != b["input"]]
    dropped = sum(len(history_spans(a)) - len(history_spans(b)) for a, b in short)
    assert summary["truncation"]["train"]["shortened"] == len(short) > 0
    assert summary["truncation"]["train"]["items_dropped"] == dropped

    # evaluate: the trained adapter and the bare model at the same cutoff
    reports = {}
    for name, ckpt, extra in (("adapter", out, []), ("bare", model, ["--cutoff-len", CUTOFF])):
        code, _, err = _cli(
            ["evaluate", "--checkpoint", ckpt, "--data", test_file, "--out", tmp_path / name, *extra], capsys
        )
        assert code == 0, err
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())["checkpoints"][0]
    for r in reports.values():
        assert (r["family"], r["template"], r["answers"]) == (family, template, answers)
        assert r["scoring"]["cutoff_len"] == CUTOFF
    a, b = reports["adapter"], reports["bare"]
    assert a["scoring"]["prompt_tokens"] == b["scoring"]["prompt_tokens"] > 0
    assert a["scoring"]["unique_prompt_tokens"] == b["scoring"]["unique_prompt_tokens"]
    assert a["truncation"] == b["truncation"]

    # show-prompt: the same decoded prompt for the adapter and the bare model, and the token counts scoring ran
    total = 0
    for i in range(len(test_rows)):
        shown = []
        for ckpt, extra in ((out, []), (model, ["--cutoff-len", CUTOFF])):
            code, text, err = _cli(
                ["show-prompt", "--checkpoint", ckpt, "--data", test_file, "--index", i, *extra], capsys
            )
            assert code == 0, err
            shown.append(text)
        assert shown[0] == shown[1]
        assert test_rows[i]["instruction"] in shown[0]
        total += int(shown[0].rsplit("tokens: ", 1)[1].split()[0])
    assert total == a["scoring"]["prompt_tokens"]
