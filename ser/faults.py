"""Fault injection, for the tests that kill a run at chosen moments and resume it.

``SER_FAULT=<point>:<n>`` makes this process SIGKILL itself (no clean-up, no ``finally``, exactly
as a pre-empted node or ``kill -9``) the ``n``-th time it reaches :func:`point` ``<point>`` (``n``
defaults to 1). Unset (always, outside tests), :func:`point` is one dictionary lookup.

Points: ``train_step`` (after an optimizer step), ``score_batch`` (after a scored batch),
``checkpoint`` (a checkpoint written to its temporary file, not yet renamed), ``pool_scored`` (the
pool scored, before self-labelling saves anything), ``acquired`` (the oracle answered a loop's request
for human labels, nothing checkpointed yet), ``export`` (the exported model written beside its
final folder, not yet renamed), ``publish`` (a reuse-cache entry half copied).
"""
from __future__ import annotations

import os
import signal
from collections import Counter

POINTS = ("train_step", "score_batch", "checkpoint", "pool_scored", "acquired", "export", "publish")
_reached: Counter = Counter()


def point(name: str) -> None:
    """Die here (SIGKILL) when ``$SER_FAULT`` names this point and this is its n-th visit."""
    spec = os.environ.get("SER_FAULT")
    if not spec:
        return
    want, _, n = spec.partition(":")
    if want not in POINTS:
        raise ValueError(f"SER_FAULT={spec!r}: unknown point {want!r}; one of {', '.join(POINTS)}")
    if want != name:
        return
    _reached[name] += 1
    if _reached[name] == int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)
