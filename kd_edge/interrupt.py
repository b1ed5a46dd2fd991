"""Stopping training cleanly on SIGINT or SIGTERM. Standard library only.

The command line runs training commands inside ``stop_on_signals()``. The handler only records
the signal (no I/O in a signal handler); the training loop asks ``requested()`` after every
optimiser step, saves its full state at that step boundary and raises ``TrainingInterrupted``;
the stages that do not train (export, quantize, bench, a pipeline's or a search's next step)
call ``stop_if_requested`` at their safe points, between files they write whole. The command
line turns either into exit code 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)
and a message that names the command that continues. A second signal ends the process at once.
"""

from __future__ import annotations

import contextlib
import os
import signal

_requested: int | None = None


def requested() -> int | None:
    """The signal that asked training to stop, if one did."""
    return _requested


def stop_if_requested(where: str) -> None:
    """A safe point outside training: stop here if a signal asked to (``where``: what was about to start)."""
    signum = _requested
    if signum is not None:
        from kd_edge.errors import Interrupted

        raise Interrupted(
            f"stopped by {signal.Signals(signum).name} before {where}; everything written so far is complete and kept",
            signum,
        )


def _handle(signum, frame) -> None:
    global _requested
    if _requested is not None:
        os._exit(128 + signum)  # the second signal: the user wants out now
    _requested = signum


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGINT and SIGTERM request a clean stop instead of killing the process. A signal that
    nothing acted on ends the block with ``Interrupted`` too, so that the exit code says it came."""
    global _requested
    _requested = None
    previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
        signum = _requested
        if signum is not None:  # it came after the last safe point: the work is done, but the exit says so
            from kd_edge.errors import Interrupted

            raise Interrupted(
                f"{signal.Signals(signum).name} came after the last step that could stop; the command had finished "
                "and everything it writes is complete",
                signum,
                finished=True,
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _requested = None
