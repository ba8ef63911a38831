"""Legacy Chinese backbones (Qwen-7B v1, Baichuan, ChatGLM) supported natively, without remote code.

Each submodule defines its families (``FAMILIES``); :mod:`llm4rec.models.registry` imports and registers
them. Importing a submodule registers nothing.
"""
