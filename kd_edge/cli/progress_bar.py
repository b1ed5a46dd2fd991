"""Progress on the console: a live rich bar per training stage on a terminal (one line per epoch everywhere),
and one live line that repeated steps (timing rounds, calibrations) replace."""

from __future__ import annotations

from kd_edge.training.progress import SilentProgress


class RichProgress(SilentProgress):
    """A bar per stage with loss and images/s; a summary line at the end of every epoch.

    Given ``display`` (a started ``rich.progress.Progress``, such as the pipeline's), the
    stage's bar is a task in it; otherwise the stage gets a transient display of its own.
    """

    def __init__(self, console=None, display=None):
        from rich.console import Console

        self.console = display.console if display is not None else (console or Console(stderr=True))
        self.shared = display
        self.bar = None
        self.task = None

    def start(self, stage, epochs, steps_per_epoch):
        self.close()
        self.bar = self.shared if self.shared is not None else new_display(self.console, transient=True)
        if self.shared is None:
            self.bar.start()
        self.task = self.bar.add_task(stage, total=epochs * steps_per_epoch, loss=float("nan"), ips=0.0)

    def step(self, loss, images_per_second):
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=loss, ips=images_per_second)

    def epoch_done(self, log):
        terms = "  ".join(f"{name} {value:.4f}" for name, value in log.terms.items())
        values = "".join(f"{name} {value:g}  " for name, value in log.values.items())
        self.console.print(
            f"{log.stage} epoch {log.epoch}/{log.epochs}  {values}loss {log.loss:.4f}  {terms}  "
            f"train acc {log.train_accuracy:.2%}  val acc {log.val_accuracy:.2%}  "
            f"{log.images_per_second:,.0f} img/s  {log.seconds:.1f}s",
            soft_wrap=True,
        )
        if log.epoch == log.epochs:
            self.close()

    def close(self):
        if self.bar is None:
            return
        if self.shared is not None:
            self.bar.remove_task(self.task)
        else:
            self.bar.stop()
        self.bar = None


def new_display(console, transient: bool):
    """A rich progress display: description, bar, count, loss and images/s for training tasks, times."""
    live_line.end()  # one live display at a time
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class TrainingColumn(ProgressColumn):
        def render(self, task):
            if "loss" not in task.fields:
                return Text("")
            return Text(f"loss {task.fields['loss']:.4f}  {task.fields['ips']:,.0f} img/s")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TrainingColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )


class LiveLine:
    """One transient line on a terminal that each ``progress()`` step replaces (a rich status spinner); ended
    before any other live display starts (two cannot run at once), and after the command."""

    def __init__(self):
        self.status = None

    def show(self, console, message: str) -> None:
        if not console.is_terminal:
            return  # logs and pipes keep the permanent steps; --verbose prints these too
        if self.status is None:
            from rich.errors import LiveError
            from rich.status import Status

            status = Status(message, console=console)
            try:
                status.start()
            except LiveError:  # another display is live (the pipeline's stage bar): it shows the progress
                return
            self.status = status
        else:
            self.status.update(message)

    def end(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


live_line = LiveLine()
