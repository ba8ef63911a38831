"""The heavy machinery behind the legacy families (Qwen-7B v1, Baichuan, ChatGLM): checkpoint reading and
writing, tokenizer builders and ChatGLM-6B's modelling code. Each family's own module under
:mod:`llm4rec.models.families` uses them.
"""
