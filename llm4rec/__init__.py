"""llm4rec: fine-tune and evaluate LLM recommenders with 4-bit QLoRA on one GPU."""

import logging as _logging

__version__ = "0.1.0"

# bitsandbytes logs a warning on every import on AVX512-BF16 CPUs when the optional `kernels` package (a
# hub download) is absent; its own CPU kernels are used instead, so there is nothing for a user to do.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
