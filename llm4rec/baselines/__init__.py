"""Classic recommenders scored on the very samples the LLMs are scored on (``llm4rec baseline``)."""
