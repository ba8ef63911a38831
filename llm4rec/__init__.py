"""llm4rec: fine-tune and evaluate LLM recommenders with 4-bit QLoRA on one GPU."""

__version__ = "0.1.0"
