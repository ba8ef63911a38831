"""Sample builders, one module per task; this docstring is the sample schema.

Every sample is one JSON object per line of ``OUT/<task>/{train,valid,test}.jsonl``:

=====================  =========================================================================
field                  meaning
=====================  =========================================================================
``instruction``        the task instruction (Alpaca field)
``input``              the context: history, wishes, candidates (Alpaca field)
``output``             the answer the model is trained to produce (Alpaca field)
``task``               ``tallrec`` / ``ranking`` / ``instructrec`` / ``next_item``
``user_id``            the user's id as in the source (string)
``item_id``            the item the sample is about (the target; for InstructRec pointwise, the
                       item shown, which may be a sampled negative), as in the source (string)
``label``              1 if the user liked ``item_id`` (rating > threshold, or the source's
                       label), else 0; for InstructRec pointwise, 1 for the target, 0 for a
                       negative; scoring (AUC, GAUC) reads this field
``timestamp``          the target event's time (seconds; null where the source has none)
``history``            item ids of the events shown as history, oldest first
``history_spans``      where the input shows them: ``[start, end, drop_end]`` character offsets
                       in ``input`` per history item (aligned with ``history``);
                       ``input[start:end]`` is the item as shown, and cutting
                       ``input[start:drop_end]`` for the oldest d items gives the input without
                       them (separators included). Empty when the input does not list the
                       history (InstructRec's explicit or no preference). Truncation drops
                       whole items through these, oldest first (:mod:`llm4rec.data.tokenize`)
=====================  =========================================================================

Task-specific fields:

* ``tallrec`` (:mod:`.tallrec`): ``output`` is ``Yes.`` / ``No.`` (``是`` / ``否`` with ``--lang zh``).
* ``ranking`` (:mod:`.ranking`): ``candidates`` (item ids of the pool, in the order shown),
  ``candidate_titles`` (their whole titles, however ``--candidate-format`` / ``--max-title-tokens``
  show them in ``input``), ``target_index`` (0-based position of the target), ``lang`` (the prompt
  language: pointwise scoring asks each candidate's Yes/No question in it, see
  :func:`.ranking.pointwise_prompts`); ``output`` is the target's index letter (``A`` for position 0).
* ``instructrec`` (:mod:`.instructrec`): ``template_id`` (``<lang>-<form>-<preference>-<intention>``),
  ``form``, ``preference``, ``intention``; ``candidates`` (pointwise: the item shown; pairwise and
  reranking: the pool; matching: null) and ``target_index`` (pairwise and reranking, else null).
  ``output``: Yes/No (pointwise), a letter (pairwise, reranking) or the target's title (matching).
* ``next_item`` (:mod:`.next_item`): ``output`` is the target's quoted title.

A task module exposes ``build(chunk, ctx)`` returning a polars DataFrame of these columns plus ``split``
(optionally with a dict of counts for meta.json), and may expose ``prepare_context(ctx)`` (run once
before the chunks) and ``summary(ctx)`` (facts of the whole task for its meta.json).
"""
