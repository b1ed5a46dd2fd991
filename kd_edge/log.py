"""What a long step is doing, and keeping other libraries' chatter quiet. Standard library only.

Library code calls ``step("quantize: calibrating on 500 images")`` before anything that
takes more than a moment; the command line prints those lines as they come (so that no
step is silent for more than about two seconds), and a library user sees nothing unless
they attach a handler to the "kd_edge" logger.

``quiet_third_party()`` hides ONNX Runtime's own printing and logging (its calibrators
print histograms) unless ``KD_EDGE_VERBOSE`` is set (`kd-edge --verbose ...`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time

LOGGER = logging.getLogger("kd_edge")
VERBOSE_ENV_VAR = "KD_EDGE_VERBOSE"


def step(message: str) -> None:
    LOGGER.info(message)


def progress(message: str) -> None:
    """A step of a repeated kind (a timing round, a calibration, a heartbeat): the command line shows it on one
    live line that the next replaces, and prints every one with ``--verbose``."""
    LOGGER.info(message, extra={"live": True})


def verbose() -> bool:
    return bool(os.environ.get(VERBOSE_ENV_VAR))


@contextlib.contextmanager
def quiet_third_party():
    """Silence ONNX Runtime's Python prints and warnings, and its C++ log below errors, for the block."""
    if verbose():
        yield
        return
    import onnxruntime as ort

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)
        ort.set_default_logger_severity(2)


@contextlib.contextmanager
def heartbeat(message: str, every: float = 2.0):
    """Repeat ``step(message)`` with the time elapsed every ``every`` seconds while a block that says nothing runs."""
    done, started = threading.Event(), time.perf_counter()

    def beat() -> None:
        while not done.wait(every):
            progress(f"{message} ({time.perf_counter() - started:.0f} s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def quiet_loggers(*names: str):
    """Only errors from these libraries' loggers for the block (kd-edge's own steps still show)."""
    loggers = [logging.getLogger(name) for name in names]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, previous, strict=True):
            logger.setLevel(level)


class PrintSteps(logging.Handler):
    """Prints every step through a callable (the command line's console); ``progress()`` steps through
    ``show_live`` where one is given."""

    def __init__(self, show, show_live=None):
        super().__init__(level=logging.INFO)
        self.show, self.show_live = show, show_live

    def emit(self, record: logging.LogRecord) -> None:
        live = getattr(record, "live", False) and self.show_live is not None
        (self.show_live if live else self.show)(record.getMessage())


@contextlib.contextmanager
def steps_shown(show, show_live=None):
    """Route ``step()`` messages to ``show`` for the block, and ``progress()`` ones to ``show_live`` (default:
    ``show`` too)."""
    handler = PrintSteps(show, show_live)
    previous = LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(previous)
