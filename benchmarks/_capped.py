"""Run one benchmark case in a forked process under a wall-clock cap.

The child inherits the parent's imports (torch, certopt), so a case pays
only for its own work; a case over the cap is killed and reported as a
skipped row instead of stalling the whole table.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

_FORK = multiprocessing.get_context("fork")


def run_capped(target: Callable[..., None], args: tuple[Any, ...], cap: float) -> dict:
    """``target(*args, connection)`` in a child; the row dict it sends, or a skip reason.

    ``target`` sends exactly one dict through ``connection``.  Past ``cap``
    seconds the child is killed: ``{"skipped": "> cap s"}``; a child that dies
    first (out of memory, say) gives ``{"skipped": "died (exit code)"}``.
    """
    receiver, sender = _FORK.Pipe(duplex=False)
    process = _FORK.Process(target=target, args=(*args, sender))
    process.start()
    if receiver.poll(cap):
        row = receiver.recv()
        process.join()
        return row
    process.kill()
    process.join()
    return {"skipped": f"> {cap:.0f} s cap" if process.exitcode in (-9, None)
            else f"died (exit {process.exitcode}; out of memory?)"}
