"""One resolved backbone: which model, which tokenizer, which template, which answer words, how it loads.

:func:`resolve_backbone` is the single place these facts are decided, from a recipe's ``model`` section
(training, ``llm4rec plan``) or from a directory (``llm4rec evaluate`` and ``show-prompt``: a training
output with its adapter, or a bare model). Every ``auto`` is settled there, once, and every precedence
rule applied there, once; the resulting :class:`Backbone` is passed down, and a training run writes it to
its output directory (:meth:`Backbone.to_record`, ``llm4rec.json``) so that evaluation rebuilds the very
same backbone from that record (:meth:`Backbone.from_record`).

The rules:

* family: the recipe's (checked against ``config.json``), else detected from ``config.json``;
* weights: the model directory, or its cached conversion for remote-code families; a hub id
  (``org/name``) goes to the model hub through ``huggingface_hub`` when the user is online;
* template: the recipe's; ``auto`` takes the template the model directory's ``llm4rec.json`` records when
  it is in the prompt language, else the family's default for that language;
* answer words: the ones ``llm4rec.json`` records with that template, else the family's words in the
  prompt language preceded by the template's answer prefix;
* compute dtype (:func:`compute_dtype_name`) and attention (:func:`attention_name`): one rule each, shared
  with the memory planner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm4rec.errors import UserError
from llm4rec.models import registry
from llm4rec.models.paths import hub_snapshot, locate_model
from llm4rec.models.registry import TEMPLATES, BackboneFamily, get_family, list_families
from llm4rec.models.templates import ANSWERS, PromptTemplate

#: the record a training output (and ``llm4rec import-gguf``) writes beside the weights or adapter
RECORD = "llm4rec.json"

# --------------------------------------------------------------------------- the two load rules


def compute_dtype_name(name: str, device_type: str, capability: tuple[int, int] | None = None) -> str:
    """The compute dtype ``name`` means on a device: ``auto`` is bfloat16 on CUDA cards of compute
    capability 8.0 (Ampere) and newer, float16 on older cards, float32 on CPU. The loader and the memory
    planner both take it from here; ``capability`` None on CUDA means a current card."""
    if name != "auto":
        return name
    if device_type == "cuda":
        return "bfloat16" if capability is None or tuple(capability) >= (8, 0) else "float16"
    return "float32"


def attention_name(name: str) -> str:
    """The attention implementation ``name`` means: ``auto`` is PyTorch's sdpa (fused where the card has
    a kernel, exact everywhere; flash_attention_2 needs its own package and is asked for by name)."""
    return "sdpa" if name == "auto" else name


def device_capability(device: torch.device) -> tuple[int, int] | None:
    """The CUDA compute capability of ``device`` (None on CPU)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------- the backbone


@dataclass(frozen=True)
class Backbone:
    """Everything resolved about a backbone: built by :func:`resolve_backbone`, never edited (use
    :func:`dataclasses.replace` for a variant, e.g. another template in a benchmark)."""

    family: BackboneFamily
    #: the model as the user named it (a directory or a hub id)
    source: str
    #: what transformers loads the weights from: ``source``, or its cached conversion
    weights: str
    tokenizer: Any = field(repr=False, compare=False)
    template: PromptTemplate
    #: (positive, negative) answer texts as they follow the prompt (answer prefix included)
    answers: tuple[str, str]
    lang: str
    cutoff_len: int
    load_in_4bit: bool
    quant_type: str
    double_quant: bool
    compute_dtype: torch.dtype
    attn_implementation: str
    #: the raw ``config.json`` of ``source`` (empty when only a record was read)
    config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: a training output's adapter directory (None for a bare model)
    adapter: str | None = None

    # ----------------------------------------------------------------- encoding

    def prompt_ids(self, samples: Sequence[dict[str, Any]]) -> list[list[int]]:
        """Unfitted prompt ids of many samples, tokenized in one batch."""
        from llm4rec.data.tokenize import prompt_ids

        return prompt_ids(self.tokenizer, self.template, samples)

    def train_ids(self, samples: Sequence[dict[str, Any]]) -> list[list[int]]:
        """Unfitted training-sequence ids (prompt, answer, suffix, EOS) of many samples, in one batch."""
        from llm4rec.data.tokenize import train_ids

        return train_ids(self.tokenizer, self.template, samples)

    def encode_prompt(self, sample: dict[str, Any], where: str = "sample") -> Any:
        """The sample's prompt fitted to ``cutoff_len - 1`` tokens (:class:`~llm4rec.data.tokenize.Fitted`):
        what scoring, validation and ``show-prompt`` give the model."""
        from llm4rec.data.tokenize import fit_prompt

        return fit_prompt(self.tokenizer, self.template, sample, self.cutoff_len, where)

    def encode_train(
        self,
        sample: dict[str, Any],
        train_on_inputs: bool = False,
        *,
        where: str = "sample",
        stats: Any = None,
    ) -> Any:
        """The sample's training example (:class:`~llm4rec.data.tokenize.TrainExample`) fitted to
        ``cutoff_len``: what training and data prep's sizing count."""
        from llm4rec.data.tokenize import encode_train_example

        return encode_train_example(
            self.tokenizer, self.template, sample, self.cutoff_len, train_on_inputs, where=where, stats=stats
        )

    def answer_token_ids(self, sample: dict[str, Any], answers: Sequence[str] | None = None) -> list[int]:
        """First token ids of ``answers`` (default: the backbone's) after ``sample``'s prompt."""
        from llm4rec.data.tokenize import render_prompt
        from llm4rec.models.answer_tokens import answer_token_ids

        return answer_token_ids(self.tokenizer, render_prompt(self.template, sample), answers or self.answers)

    # ----------------------------------------------------------------- loading

    def load_model(self, device: torch.device | str | None = None, *, trainable: bool = False) -> Any:
        """The base model loaded as resolved (4-bit or not, dtype, attention) on ``device``, with the
        adapter on it for a training output (in eval mode unless ``trainable``)."""
        from llm4rec.models.loading import load_base_model

        if self.adapter is not None and not (Path(self.adapter) / "adapter_config.json").is_file():
            raise UserError(
                f"{self.adapter}: training output without an adapter yet (no adapter_config.json)"
            )
        model = load_base_model(self, device=device)
        if self.adapter is not None:
            from peft import PeftModel

            from llm4rec.safetensors_check import check_adapter_dir

            check_adapter_dir(self.adapter, model, self.weights)  # shapes and recorded base, before peft
            model = PeftModel.from_pretrained(model, self.adapter, is_trainable=trainable)
        if not trainable:
            model.eval()
        return model

    # ----------------------------------------------------------------- records

    def load_settings(self) -> dict[str, Any]:
        """The concrete load options, as a recipe's ``model`` section spells them."""
        return {
            "load_in_4bit": self.load_in_4bit,
            "quant_type": self.quant_type,
            "double_quant": self.double_quant,
            "compute_dtype": str(self.compute_dtype).removeprefix("torch."),
            "attn_implementation": self.attn_implementation,
        }

    def to_record(self) -> dict[str, Any]:
        """The complete ``llm4rec.json`` of a training output: enough to rebuild this backbone
        (:meth:`from_record`) with the tokenizer saved beside it."""
        return {
            "family": self.family.name,
            "template": self.template.name,
            "answers": list(self.answers),
            "lang": self.lang,
            "cutoff_len": self.cutoff_len,
            "base_model": self.source,
            "weights": self.weights,
            "load": self.load_settings(),
        }

    @classmethod
    def from_record(
        cls,
        directory: str | Path,
        record: dict[str, Any] | None = None,
        *,
        tokenizer: Any = None,
        adapter: bool = True,
    ) -> Backbone:
        """The backbone a complete ``llm4rec.json`` in ``directory`` describes, its tokenizer loaded from
        ``directory`` (unless given); ``adapter``: the directory holds the adapter on those weights."""
        from llm4rec.models.loading import load_tokenizer

        d = Path(directory)
        rec = read_record(d) if record is None else record
        missing = [k for k in _COMPLETE if k not in rec]
        if missing:
            raise UserError(f"{d / RECORD}: incomplete record (no {', '.join(missing)})")
        family = get_family(rec["family"])
        load = rec["load"]
        return cls(
            family=family,
            source=str(rec["base_model"]),
            weights=str(rec["weights"]),
            tokenizer=tokenizer if tokenizer is not None else load_tokenizer(d, family),
            template=TEMPLATES[rec["template"]],
            answers=(rec["answers"][0], rec["answers"][1]),
            lang=rec["lang"],
            cutoff_len=int(rec["cutoff_len"]),
            load_in_4bit=bool(load["load_in_4bit"]),
            quant_type=load["quant_type"],
            double_quant=bool(load["double_quant"]),
            compute_dtype=_dtype(load["compute_dtype"], d / RECORD),
            attn_implementation=attention_name(load["attn_implementation"]),
            adapter=str(d) if adapter else None,
        )


#: the keys of a complete record
_COMPLETE = ("family", "template", "answers", "lang", "cutoff_len", "base_model", "weights", "load")


def _dtype(name: str, where: Any) -> torch.dtype:
    if name not in ("bfloat16", "float16", "float32"):
        raise UserError(f"{where}: compute_dtype: expected bfloat16, float16 or float32, got {name!r}")
    return getattr(torch, name)


def read_record(model_dir: str | Path | None) -> dict[str, Any]:
    """The ``llm4rec.json`` of a model or adapter directory, checked: ``family`` a registered family,
    ``template`` a known template and ``answers`` two answer texts, each when present. ``{}`` when the
    directory has none."""
    from llm4rec.io import read_json_object

    if model_dir is None:
        return {}
    path = Path(model_dir) / RECORD
    if not path.is_file():
        return {}
    rec = read_json_object(path)
    if "family" in rec:
        try:
            get_family(str(rec["family"]))
        except UserError as exc:
            raise UserError(f"{path}: family: {str(exc).split(': ', 1)[1]}") from None
    if "template" in rec and rec["template"] not in TEMPLATES:
        raise UserError(
            f"{path}: template: unknown template {rec['template']!r}; known: {', '.join(TEMPLATES)}"
        )
    answers = rec.get("answers")
    if answers is not None and not (
        isinstance(answers, list) and len(answers) == 2 and all(isinstance(a, str) and a for a in answers)
    ):
        raise UserError(
            f"{path}: answers: expected two non-empty strings (positive, negative), got {answers!r}"
        )
    return rec


# --------------------------------------------------------------------------- resolution


def resolve_backbone(
    source: Any,
    *,
    cutoff_len: int = 0,
    lang: str | None = None,
    device: torch.device | str | None = None,
    load_in_4bit: bool | None = None,
    template: str = "auto",
    for_planning: bool = False,
) -> Backbone:
    """Resolve a backbone once, from a recipe's ``model`` section (:class:`llm4rec.config.ModelConfig`;
    ``cutoff_len`` is then the recipe's ``data.cutoff_len``) or from a directory: a training output
    (adapter beside ``llm4rec.json`` / ``recipe.yaml``) or a bare model (``config.json``).

    For a directory, ``cutoff_len`` > 0 overrides the recorded cutoff (a bare model's default is the recipe
    default), ``lang`` picks a bare model's language (a training output's other language is an error) and
    ``load_in_4bit`` overrides how the base is loaded; ``template`` (not ``auto``) is a bare model's
    template, as a recipe's ``model.template`` would be. ``device`` (default: CUDA when present) decides
    what ``compute_dtype: auto`` means. ``for_planning`` (``llm4rec plan``, a recipe only) loads no
    tokenizer (``tokenizer`` is None) and converts no weights (``weights`` is the source).
    """
    device = torch.device(device) if device is not None else default_device()
    if isinstance(source, (str, Path)):
        d = Path(source)
        if not d.is_dir():
            what = "is a file, not a directory" if d.exists() else "does not exist"
            raise UserError(
                f"--checkpoint: {d} {what} (checkpoint directory not found; expected an adapter or model directory)"
            )
        if (d / "adapter_config.json").is_file() or (d / "recipe.yaml").is_file():
            return _from_training_output(d, cutoff_len, lang, device, load_in_4bit)
        if (d / "config.json").is_file():
            return _from_bare_model(d, cutoff_len, lang, device, load_in_4bit, template)
        raise UserError(f"{d}: neither an adapter (adapter_config.json) nor a model (config.json)")
    return _from_model_section(source, cutoff_len, device, for_planning)


def _from_model_section(m: Any, cutoff_len: int, device: torch.device, for_planning: bool) -> Backbone:
    """A recipe's ``model`` section: the training side of every rule."""
    from llm4rec.config import DataConfig

    where = locate_model(m.path)
    config = registry.read_model_config(where) or {}
    family = resolve_family(m.path, m.family, config)
    if for_planning:
        weights: Path | str = m.path
    elif Path(m.path).is_dir():
        weights = _weights(where, family, config)
    elif family.converter is None:
        weights = m.path  # a hub id: transformers fetches the weights when the model loads
    else:  # a remote-code release on the hub: converted from its full snapshot
        weights = _weights(hub_snapshot(m.path, None), family, config)
    record = read_record(where)
    template = _template(family, m.template, m.lang, record)
    tok_dir = weights if Path(weights).is_dir() else where
    return Backbone(
        family=family,
        source=m.path,
        weights=str(weights),
        tokenizer=None if for_planning else _tokenizer(tok_dir, family),
        template=template,
        answers=_answers(family, m.lang, template, record),
        lang=m.lang,
        cutoff_len=cutoff_len or DataConfig().cutoff_len,
        config=config,
        **_load_options(m, device),
    )


def _from_training_output(
    d: Path, cutoff_len: int, lang: str | None, device: torch.device, load_in_4bit: bool | None
) -> Backbone:
    """A training output: its complete ``llm4rec.json`` as written, or (outputs of older versions) its
    ``recipe.yaml`` with what the partial record says winning over the recipe."""
    from llm4rec.models.loading import load_tokenizer

    if not any((d / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise UserError(f"{d}: no tokenizer saved beside the adapter")
    rec = read_record(d)
    if all(k in rec for k in _COMPLETE):
        bb = Backbone.from_record(d, rec)
    else:
        recipe = _read_saved_recipe(d)
        m = recipe.model
        where = locate_model(m.path, f"{d / 'recipe.yaml'}: model.path", what="the adapter's base model")
        config = registry.read_model_config(where) or {}
        family = get_family(rec["family"]) if "family" in rec else resolve_family(m.path, m.family, config)
        template = TEMPLATES[rec["template"]] if "template" in rec else None
        if template is None:
            template = _template(family, m.template, m.lang, read_record(where))
        bb = Backbone(
            family=family,
            source=m.path,
            weights=str(_weights(where, family, config)),
            tokenizer=load_tokenizer(d, family),
            template=template,
            answers=tuple(rec["answers"]) if "answers" in rec else answer_words(family, m.lang, template),
            lang=m.lang,
            cutoff_len=recipe.data.cutoff_len,
            adapter=str(d),
            **_load_options(m, device),
        )
    if lang and lang != bb.lang:
        raise UserError(f"--lang: {d} was trained with model.lang {bb.lang!r}, not {lang!r}")
    changes: dict[str, Any] = {}
    if cutoff_len:
        changes["cutoff_len"] = cutoff_len
    if load_in_4bit is not None:
        changes["load_in_4bit"] = load_in_4bit
    return dataclasses.replace(bb, **changes) if changes else bb


def _from_bare_model(
    d: Path, cutoff_len: int, lang: str | None, device: torch.device, load_in_4bit: bool | None, template: str
) -> Backbone:
    """A bare model directory: ``lang`` (else the language of the template its ``llm4rec.json`` records,
    else English), that record's template and answers where they fit, the recipe defaults otherwise."""
    from llm4rec.config import DataConfig, ModelConfig

    config = registry.read_model_config(d) or {}
    family = resolve_family(str(d), "auto", config)
    rec = read_record(d)
    lang = lang or (TEMPLATES[rec["template"]].lang if "template" in rec else "en")
    if lang not in ANSWERS:
        raise UserError(f"--lang: unknown language {lang!r}; choose one of {', '.join(ANSWERS)}")
    tpl = _template(family, template, lang, rec)
    weights = _weights(d, family, config)
    return Backbone(
        family=family,
        source=str(d),
        weights=str(weights),
        tokenizer=_tokenizer(d, family),
        template=tpl,
        answers=_answers(family, lang, tpl, rec),
        lang=lang,
        cutoff_len=cutoff_len or DataConfig().cutoff_len,
        config=config,
        **_load_options(ModelConfig(load_in_4bit=bool(load_in_4bit)), device),
    )


def _load_options(m: Any, device: torch.device) -> dict[str, Any]:
    """A ``model`` section's load options, concrete for ``device`` (the compute dtype and attention rules)."""
    dtype = compute_dtype_name(m.compute_dtype, device.type, device_capability(device))
    return {
        "load_in_4bit": m.load_in_4bit,
        "quant_type": m.quant_type,
        "double_quant": m.double_quant,
        "compute_dtype": getattr(torch, dtype),
        "attn_implementation": attention_name(m.attn_implementation),
    }


def _read_saved_recipe(ckpt: Path) -> Any:
    """The typed ``recipe.yaml`` saved beside an adapter."""
    import yaml

    from llm4rec.config import recipe_from_dict

    recipe_path = ckpt / "recipe.yaml"
    if not recipe_path.is_file():
        raise UserError(f"{ckpt}: adapter without recipe.yaml; was it written by llm4rec's train.py?")
    try:
        raw = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{recipe_path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    try:
        return recipe_from_dict(raw if isinstance(raw, dict) else {})
    except UserError as exc:
        raise UserError(f"{recipe_path}: {exc}") from None


# --------------------------------------------------------------------------- the rules, one each


def resolve_family(path: str, wanted: str = "auto", config: dict[str, Any] | None = None) -> BackboneFamily:
    """The recipe's family (checked against ``config``, the model's config.json, read from ``path`` when
    not given), else the detected one."""
    if config is None and Path(path).is_dir():
        config = registry.read_model_config(path)
    detected = registry.family_of_config(config) if config else None
    if wanted == "auto":
        if detected is None:
            known = ", ".join(f.name for f in list_families())
            raise UserError(
                f"model.family: cannot detect the family of {path!r} from its config.json; "
                f"set model.family explicitly (one of: {known})"
            )
        return detected
    fam = get_family(wanted)
    if detected is not None and not fam.matches(config):
        raise UserError(
            f"model.family: recipe says {wanted!r} but {path}/config.json is a {detected.name!r} checkpoint"
        )
    return fam


def _weights(where: Path | str, family: BackboneFamily, config: dict[str, Any] | None) -> Path | str:
    """What transformers loads: the model itself, or its cached conversion for remote-code families."""
    if family.converter is None or not Path(where).is_dir():
        return where
    if config is None:
        config = registry.read_model_config(where) or {}
    if config.get("llm4rec_family"):
        return where  # already converted
    from llm4rec.models.convert import convert_cached

    return convert_cached(family, Path(where))


def _template(family: BackboneFamily, name: str, lang: str, record: dict[str, Any]) -> PromptTemplate:
    """The recipe's template; ``auto``: the recorded one when in ``lang``, else the family default."""
    if name == "auto":
        rec = record.get("template")
        if rec in TEMPLATES and TEMPLATES[rec].lang == lang:
            name = rec
        else:
            name = family.default_template.get(lang) or family.default_template["en"]
    if name not in TEMPLATES:
        import difflib

        close = difflib.get_close_matches(name, TEMPLATES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"model.template: unknown template {name!r}{hint}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def resolve_template(
    family: BackboneFamily, name: str, lang: str, model_path: str | Path | None = None
) -> PromptTemplate:
    """The template ``name`` for ``family`` in ``lang``; ``auto`` as :func:`resolve_backbone` settles it
    for a model directory ``model_path`` (its recorded template when in ``lang``, else the default)."""
    return _template(family, name, lang, read_record(model_path))


def answer_words(
    family: BackboneFamily, lang: str, template: PromptTemplate | None = None
) -> tuple[str, str]:
    """(positive, negative) answer texts as they follow the prompt: the family's words in ``lang``,
    preceded by the template's answer prefix."""
    pos, neg = family.answers.get(lang) or ANSWERS[lang]
    prefix = template.answer_prefix if template is not None else ""
    return prefix + pos, prefix + neg


def _answers(
    family: BackboneFamily, lang: str, template: PromptTemplate, record: dict[str, Any]
) -> tuple[str, str]:
    """Recorded answers belong to the recorded template: they apply when that template is used."""
    if "answers" in record and record.get("template") == template.name:
        return record["answers"][0], record["answers"][1]
    return answer_words(family, lang, template)


def _tokenizer(where: Path | str, family: BackboneFamily) -> Any:
    from llm4rec.models.loading import load_tokenizer

    return load_tokenizer(where, family)


def settle_recipe(recipe: Any, backbone: Backbone) -> Any:
    """``recipe`` with its ``model`` section's ``auto`` values (family, template, compute dtype, attention)
    replaced by what ``backbone`` resolved them to: saved, it gives the same backbone again."""
    model = dataclasses.replace(
        recipe.model,
        family=backbone.family.name,
        template=backbone.template.name,
        compute_dtype=backbone.load_settings()["compute_dtype"],
        attn_implementation=backbone.attn_implementation,
    )
    return dataclasses.replace(recipe, model=model)


def tokenizer_backbone(
    path: str | Path, family: str = "auto", template: str = "auto", lang: str = "en", cutoff_len: int = 0
) -> Backbone:
    """The backbone of a directory used for its tokenizer only (data prep's sizing, prompt-length
    measurements): a model, a converted model, or an original remote-code release whose tokenizer is
    converted on the fly (:func:`llm4rec.models.loading.load_backbone_tokenizer`). Template and answers
    follow :func:`resolve_backbone`'s rules; no weights are read or converted, so ``weights`` is the
    directory itself and the load options are the recipe defaults."""
    from llm4rec.config import DataConfig, ModelConfig
    from llm4rec.models.loading import load_backbone_tokenizer

    tok, fam = load_backbone_tokenizer(path, family)
    record = read_record(path)
    tpl = _template(fam, template, lang, record)
    return Backbone(
        family=fam,
        source=str(path),
        weights=str(path),
        tokenizer=tok,
        template=tpl,
        answers=_answers(fam, lang, tpl, record),
        lang=lang,
        cutoff_len=cutoff_len or DataConfig().cutoff_len,
        **_load_options(ModelConfig(), torch.device("cpu")),
    )
