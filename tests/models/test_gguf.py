"""`llm4rec import-gguf` on tiny GGUF files written with the `gguf` package (the real file format)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")

from llm4rec.cli import main as cli  # noqa: E402
from llm4rec.models.gguf import import_gguf  # noqa: E402
from tests.conftest import make_tallrec_samples  # noqa: E402
from tests.models._gguf import write_gguf, write_header_only  # noqa: E402

TEXT = 'User Preference: "Heat (1995)", "Fargo (1996)"\nWhether the user will like the target movie?'


@pytest.fixture(scope="module")
def tokenizer():
    from llm4rec.models.tiny import train_tokenizer

    corpus = [r["input"] + " " + r["output"] for r in make_tallrec_samples(100)]
    return train_tokenizer("qwen2", corpus, vocab_size=400)


def _tiny(arch: str, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: K is permuted with its own head count
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        initializer_range=0.2,  # large enough that logits differ visibly between tokens
    )
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False)).eval()


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize(
    "arch,qtype,tol",
    [("llama", "F32", 1e-5), ("llama", "F16", 2e-2), ("llama", "Q8_0", 0.15), ("qwen2", "F32", 1e-5)],
)
def test_import_round_trips_logits(tmp_path: Path, tokenizer, arch: str, qtype: str, tol: float) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm4rec.models.backbone import resolve_backbone

    original = _tiny(arch, len(tokenizer))
    src = write_gguf(original, tokenizer, tmp_path / f"tiny-{arch}.{qtype}.gguf", arch=arch, qtype=qtype)
    out = tmp_path / "imported"
    assert cli(["import-gguf", str(src), "--out", str(out)]) == 0

    imported = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    reference = AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file=src.name, dtype=torch.float32
    ).eval()
    tok_out = AutoTokenizer.from_pretrained(str(out))
    tok_ref = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=src.name)
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    assert tok_out(TEXT)["input_ids"] == tok_ref(TEXT)["input_ids"] == ids[0].tolist()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())

    got = _logits(imported, ids)
    # exactly what transformers' own GGUF loader computes from the same file
    assert torch.equal(got, _logits(reference, ids))
    # and the original model's logits, up to the storage type's rounding (amplified through the random
    # layers; a wrong tensor layout gives errors of order 1)
    want = _logits(original, ids)
    err = (got - want).abs().max().item() / want.abs().max().item()
    assert err <= tol, f"{arch}/{qtype}: relative logit error {err:.2e} > {tol}"
    if qtype != "F32":
        assert err > 0  # the file really held rounded weights

    # every llm4rec command loads it with the recorded template (the family default, not its chat format)
    bundle = resolve_backbone(out)
    assert bundle.family.name == arch
    assert bundle.template.name == "alpaca"
    assert json.loads((out / "llm4rec.json").read_text())["source"]["tensor_types"][qtype] > 0


def test_template_option_and_bf16(tmp_path: Path, tokenizer) -> None:
    src = write_gguf(_tiny("llama", len(tokenizer)), tokenizer, tmp_path / "t.gguf")
    rec = import_gguf(src, tmp_path / "bf16", dtype="bfloat16", template="chatml")
    assert rec["template"] == "chatml"
    from llm4rec.models.backbone import resolve_backbone

    assert resolve_backbone(tmp_path / "bf16").template.name == "chatml"  # what llm4rec.json records is used
    from safetensors import safe_open

    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118


def _one_error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        cli(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_unsupported_architecture_is_one_line(tmp_path: Path, capsys) -> None:
    src = write_header_only(tmp_path / "m.gguf", "gptneox")
    line = _one_error_line(capsys, ["import-gguf", str(src), "--out", str(tmp_path / "out")])
    assert "unsupported architecture 'gptneox'" in line and "llama" in line
    assert not (tmp_path / "out").exists()


def test_unsupported_quantization_is_one_line(tmp_path: Path, capsys) -> None:
    import gguf

    block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_1][1]
    raw = np.zeros((4, 2 * block_bytes), dtype=np.uint8)  # 4 rows of 64 Q8_1 values
    src = write_header_only(
        tmp_path / "m.gguf",
        "llama",
        {
            "output_norm.weight": (np.ones(64, dtype=np.float32), None),
            "blk.0.attn_q.weight": (raw, gguf.GGMLQuantizationType.Q8_1),
        },
    )
    line = _one_error_line(capsys, ["import-gguf", str(src), "--out", str(tmp_path / "out")])
    assert "Q8_1" in line and "blk.0.attn_q.weight" in line
    assert not (tmp_path / "out").exists()


def test_not_a_gguf_file_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_text("not a gguf file\n")
    line = _one_error_line(capsys, ["import-gguf", str(bad), "--out", str(tmp_path / "out")])
    assert str(bad) in line and "GGUF" in line
    missing = _one_error_line(
        capsys, ["import-gguf", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "o")]
    )
    assert "no such file" in missing
