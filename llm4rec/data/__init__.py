"""Data preparation: source logs -> canonical tables -> instruction samples (see :mod:`llm4rec.data.prep`).

Modules: ``readers`` (parsing with exact ``file:line`` errors), ``sources/`` (one reader per dataset
layout), ``canonical`` (the two tables and the filters), ``splits`` (timelines and leak-free splits),
``tasks/`` (sample builders; the sample schema is in :mod:`llm4rec.data.tasks`), ``prep`` (the pipeline
and the command line). ``synthetic`` and ``tokenize`` serve the training side.
"""
