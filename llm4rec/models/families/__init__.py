"""One module per backbone family: its registry entry (``FAMILY``), templates, answer words, and for the
remote-code releases the tensor map, converted config and converter.

:mod:`llm4rec.models.registry` imports every module explicitly; importing one registers nothing.
"""
