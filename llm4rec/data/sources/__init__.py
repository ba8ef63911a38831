"""Source readers: each turns one dataset layout into the canonical tables (:mod:`llm4rec.data.canonical`)."""
