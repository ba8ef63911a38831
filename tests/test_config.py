"""Recipe loading and validation: every shipped recipe loads; bad keys and values are named."""

from pathlib import Path

import pytest

from llm4rec.config import Recipe, describe, load_recipe, save_recipe
from llm4rec.errors import UserError

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    names = {p.name for p in RECIPES}
    assert {"demo_cpu.yaml", "tallrec_ml100k.yaml", "tallrec_ml1m.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_explains_itself(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    text = path.read_text()
    header = text.split("\n\n")[0]
    assert "data_prep/" in header and "train.py" in header, "header must give the data_prep and launch lines"
    assert f"recipes/{path.name}" in text


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


BASE = "model: {path: m}\ndata: {train: t.jsonl}\ntrain: {output_dir: out}\n"


def test_unknown_key_names_the_closest(tmp_path):
    with pytest.raises(
        UserError, match=r"unknown recipe key 'train.learning_rat' \(did you mean 'learning_rate'\?\)"
    ):
        load_recipe(_write(tmp_path, BASE), ["train.learning_rat=1"])


def test_unknown_section(tmp_path):
    with pytest.raises(UserError, match="did you mean 'lora'"):
        load_recipe(_write(tmp_path, BASE + "loar: {r: 8}\n"))


def test_wrong_type_and_impossible_value(tmp_path):
    with pytest.raises(UserError, match=r"lora\.r: expected an integer"):
        load_recipe(_write(tmp_path, BASE), ["lora.r=eight"])
    with pytest.raises(UserError, match=r"lora\.dropout: must be in \[0, 1\)"):
        load_recipe(_write(tmp_path, BASE), ["lora.dropout=1.5"])
    with pytest.raises(UserError, match=r"train\.batch_size: must be a multiple"):
        load_recipe(_write(tmp_path, BASE), ["train.batch_size=10", "train.micro_batch_size=4"])
    with pytest.raises(UserError, match=r"model\.quant_type: 'int3' is not one of"):
        load_recipe(_write(tmp_path, BASE), ["model.quant_type=int3"])


def test_overrides_apply_and_roundtrip(tmp_path):
    r = load_recipe(_write(tmp_path, BASE), ["lora.r=4", "lora.targets=[q_proj, k_proj]", "train.epochs=2"])
    assert r.lora.r == 4 and r.lora.targets == ["q_proj", "k_proj"] and r.train.epochs == 2.0
    save_recipe(r, tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml") == r


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match=r"r\.yaml:\d+: not valid YAML"):
        load_recipe(_write(tmp_path, "model:\n  path: [unclosed\n"))


def test_every_field_is_documented():
    rows = describe()
    assert len(rows) > 30
    assert all(doc for _, doc, _ in rows)


@pytest.mark.parametrize("spelling", ["3e-3", "3E-3", "0.3e-2", "3.0e-3", "+3e-3", "0.003", "3_0e-4"])
def test_every_python_float_spelling_is_a_number(tmp_path, spelling):
    # YAML 1.1 reads `3e-3` (no dot) as a string; recipes and overrides accept what float() accepts
    recipe = load_recipe(_write(tmp_path, BASE + f"lora: {{dropout: {spelling}}}\n"), [])
    assert recipe.lora.dropout == pytest.approx(float(spelling.replace("_", "")))
    over = load_recipe(_write(tmp_path, BASE), [f"train.learning_rate={spelling}"])
    assert over.train.learning_rate == pytest.approx(float(spelling.replace("_", "")))
    assert isinstance(over.train.learning_rate, float)


@pytest.mark.parametrize("value", ["nan", "inf", "three", "1e-3x"])
def test_non_numbers_and_non_finite_floats_are_rejected(tmp_path, value):
    with pytest.raises(UserError, match=r"train\.learning_rate: expected a (finite )?number"):
        load_recipe(_write(tmp_path, BASE), [f"train.learning_rate={value}"])


def test_auto_micro_batch_and_checkpointing(tmp_path):
    r = load_recipe(
        _write(tmp_path, BASE),
        ["train.micro_batch_size=auto", "model.gradient_checkpointing=auto", "train.batch_size=10"],
    )
    assert r.train.micro_batch_size == "auto" and r.model.gradient_checkpointing == "auto"
    with pytest.raises(UserError, match=r"train\.micro_batch_size: expected an integer or 'auto', got 'big'"):
        load_recipe(_write(tmp_path, BASE), ["train.micro_batch_size=big"])
    with pytest.raises(
        UserError, match=r"model\.gradient_checkpointing: expected true or false or 'auto', got 'maybe'"
    ):
        load_recipe(_write(tmp_path, BASE), ["model.gradient_checkpointing=maybe"])
    with pytest.raises(UserError, match=r"train\.auto_memory_gb: must be >= 0"):
        load_recipe(_write(tmp_path, BASE), ["train.auto_memory_gb=-1"])
