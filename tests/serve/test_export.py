"""`llm4rec export`: merged logits equal the unmerged adapter's; the adapter alone loads onto its base."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm4rec.serve.export import main
from tests.conftest import run_main


def unmerged(adapter, base):
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(adapter)).eval()


@pytest.fixture(scope="module")
def prompt_ids(serve_adapter):
    tok = AutoTokenizer.from_pretrained(str(serve_adapter))
    return tok(
        ['User Preference: "Film 1 (Drama)"\nWhether the user will like it?', "Yes."],
        padding=True,
        return_tensors="pt",
    )


def test_merged_export_loads_plainly_with_equal_logits(
    serve_adapter, tiny_llama, tmp_path, prompt_ids, capsys
):
    out = tmp_path / "merged"
    code, stdout, err = run_main(
        main, ["--checkpoint", str(serve_adapter), "--out", str(out), "--merge", "--dtype", "float32"], capsys
    )
    assert code == 0, err
    assert "merged model (float32)" in stdout
    plain = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert not any("lora" in n for n, _ in plain.named_parameters())
    with torch.no_grad():
        want = unmerged(serve_adapter, tiny_llama)(**prompt_ids).logits
        got = plain(**prompt_ids).logits
    assert (got - want).abs().max().item() < 1e-4
    # the LoRA is not zero: merging changed the base's logits
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    with torch.no_grad():
        assert (base(**prompt_ids).logits - got).abs().max().item() > 1e-3
    rec = json.loads((out / "llm4rec.json").read_text())
    assert rec["merged"] is True and rec["family"] == "llama" and rec["answers"] == ["Yes.", "No."]
    assert (
        AutoTokenizer.from_pretrained(str(out))("Yes.")["input_ids"]
        == AutoTokenizer.from_pretrained(str(serve_adapter))("Yes.")["input_ids"]
    )
    # llm4rec reads it as a bare model with the adapter's template and answers
    from llm4rec.models.backbone import resolve_backbone

    ps = resolve_backbone(out, device="cpu")
    assert (ps.template.name, ps.answers) == (rec["template"], tuple(rec["answers"]))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_adapter_export_points_at_its_base(serve_adapter, tiny_llama, tmp_path, prompt_ids, capsys):
    out = tmp_path / "adapter-only"
    code, _, err = run_main(main, ["--checkpoint", str(serve_adapter), "--out", str(out)], capsys)
    assert code == 0, err
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_llama.resolve())
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"])
    with torch.no_grad():
        got = PeftModel.from_pretrained(base, str(out)).eval()(**prompt_ids).logits
        want = unmerged(serve_adapter, tiny_llama)(**prompt_ids).logits
    assert torch.equal(got, want)


def test_errors_leave_nothing_behind(serve_adapter, tiny_llama, tmp_path, capsys):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("user file")
    cases = [
        (
            ["--checkpoint", str(tiny_llama), "--out", str(tmp_path / "x"), "--merge"],
            "is not a training output",
        ),
        (["--checkpoint", str(serve_adapter), "--out", str(keep), "--merge"], "is not an llm4rec export"),
        (
            ["--checkpoint", str(serve_adapter), "--out", str(tmp_path / "y"), "--dtype", "float16"],
            "applies to --merge only",
        ),
    ]
    for argv, text in cases:
        code, _, err = run_main(main, argv, capsys)
        assert code == 2 and err.startswith("error: ") and text in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    assert (keep / "notes.txt").read_text() == "user file"
