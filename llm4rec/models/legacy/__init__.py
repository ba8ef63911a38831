"""Legacy Chinese backbones (Qwen-7B v1, Baichuan, ChatGLM) supported natively, without remote code.

Each submodule registers its families in :mod:`llm4rec.models.registry` when imported.
"""

import importlib

for _name in ("qwen", "baichuan", "chatglm2", "chatglm"):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:  # a family not built yet simply is not registered
        if _exc.name != f"{__name__}.{_name}":
            raise
