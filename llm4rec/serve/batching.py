"""Dynamic batching: concurrent requests' prompts scored together by one worker thread that owns the model.

A request submits a job (its Yes/No samples, or one listwise sample) and waits on a future. The worker
takes the first waiting job, then keeps collecting jobs for at most ``max_wait_s`` (or until
``max_rows`` prompts are gathered), and scores them in one call of the scoring core: each job's samples
form one group, so every request's history prefix runs once, the template prefix common to all of them
once for the whole batch, and the candidates of all requests share token-budget forward passes.
``enabled=False`` scores one job at a time (the baseline of ``scripts/bench_serve.py``).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

#: the two kinds of job, scored by different calls of the model
YES_NO, LETTERS = "yes_no", "letters"


@dataclass
class Job:
    """Samples of one request and the future its scores are delivered to."""

    kind: str
    samples: list[dict[str, Any]]
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """Counters for /metadata: calls of the model and the jobs and prompts they carried."""

    batches: int = 0
    jobs: int = 0
    prompts: int = 0
    largest_batch_jobs: int = 0


class Batcher:
    """The worker thread and its queue (see the module docstring)."""

    def __init__(self, model: Any, *, enabled: bool = True, max_wait_s: float = 0.005, max_rows: int = 4096):
        self.model, self.enabled, self.max_wait_s, self.max_rows = model, enabled, max_wait_s, max_rows
        self.stats = BatchStats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="llm4rec-batcher", daemon=True)
        self._thread.start()

    def submit(self, kind: str, samples: list[dict[str, Any]]) -> Future:
        """Queue a job; its future gets the list of scores (per sample, or per pool for letters)."""
        job = Job(kind, samples)
        self._queue.put(job)
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs and stop the worker."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        """``first`` plus the jobs of its kind arriving within the wait; whether the stop sentinel came."""
        jobs, rows = [first], len(first.samples)
        if not self.enabled:
            return jobs, False
        deadline = time.perf_counter() + self.max_wait_s
        while rows < self.max_rows:
            left = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            if job.kind != first.kind:
                self._queue.put(job)  # the other kind goes in the next batch
                break
            jobs.append(job)
            rows += len(job.samples)
        return jobs, False

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            self._score(jobs)
            if stop:
                return

    def _score(self, jobs: list[Job]) -> None:
        samples = [s for j in jobs for s in j.samples]
        try:
            if jobs[0].kind == LETTERS:
                flat = self.model.score_letters(samples)
            else:
                groups = [g for g, j in enumerate(jobs) for _ in j.samples]
                flat = self.model.score_yes_no(samples, groups)
        except Exception as exc:  # delivered to every waiting request, the worker keeps serving
            for j in jobs:
                j.future.set_exception(exc)
            return
        st = self.stats
        st.batches += 1
        st.jobs += len(jobs)
        st.prompts += len(samples)
        st.largest_batch_jobs = max(st.largest_batch_jobs, len(jobs))
        start = 0
        for j in jobs:
            j.future.set_result(flat[start : start + len(j.samples)])
            start += len(j.samples)
