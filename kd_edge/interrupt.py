"""Stopping training cleanly on SIGINT or SIGTERM. Standard library only.

The command line runs training inside ``stop_on_signals()``. The handler only records the
signal (no I/O in a signal handler); the training loop asks ``requested()`` after every
optimiser step, saves its full state at that step boundary and raises
``TrainingInterrupted``, which the command line turns into exit code 128 + the signal's
number (130 for Ctrl-C, 143 for SIGTERM). A second signal ends the process at once.
"""

from __future__ import annotations

import contextlib
import os
import signal

_requested: int | None = None


def requested() -> int | None:
    """The signal that asked training to stop, if one did."""
    return _requested


def _handle(signum, frame) -> None:
    global _requested
    if _requested is not None:
        os._exit(128 + signum)  # the second signal: the user wants out now
    _requested = signum


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGINT and SIGTERM request a clean stop instead of killing the process."""
    global _requested
    _requested = None
    previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _requested = None
