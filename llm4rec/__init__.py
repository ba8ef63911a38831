"""llm4rec: fine-tune and evaluate LLM recommenders with 4-bit QLoRA on one GPU."""

import logging as _logging
import os as _os

__version__ = "0.1.0"

# llm4rec never downloads by itself: transformers and huggingface_hub stay offline (a missing local
# directory is then reported at once instead of after a minute of hub retries). A user who sets either
# variable, e.g. HF_HUB_OFFLINE=0 to let hub ids resolve, keeps their choice. Set before either library is
# imported, because both read the variables at import time.
if "HF_HUB_OFFLINE" not in _os.environ and "TRANSFORMERS_OFFLINE" not in _os.environ:
    _os.environ["HF_HUB_OFFLINE"] = "1"
    _os.environ["TRANSFORMERS_OFFLINE"] = "1"

# bitsandbytes logs a warning on every import on AVX512-BF16 CPUs when the optional `kernels` package (a
# hub download) is absent; its own CPU kernels are used instead, so there is nothing for a user to do.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
