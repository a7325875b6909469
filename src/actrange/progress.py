"""What a sweep tells the person watching: aligned lines per epoch, a bar on a terminal.

On a terminal a tqdm bar counts model-epochs; elsewhere (CI, cluster logs) only plain lines are
written. ``quiet`` keeps both silent except for errors.
"""

import sys
from typing import TextIO

from tqdm import tqdm

from actrange.config import format_number

DETAIL_LIMIT = 16  # groups up to this size get one line per run and epoch


class Progress:
    """Progress reporting for a sweep. All output goes to ``stream`` (stderr by default)."""

    def __init__(
        self,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        bar: bool | None = None,
        prefix: str = "",
    ):
        self.quiet = quiet
        self.prefix = prefix  # names the process when several write to one terminal
        self.stream = stream or sys.stderr
        self.use_bar = (not quiet) and (self.stream.isatty() if bar is None else bar)
        self._bar: tqdm | None = None

    def _write(self, text: str) -> None:
        if self.quiet:
            return
        text = self.prefix + text
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A free-form line."""
        self._write(text)

    def sweep_started(self, planned: int, skipped: int, groups: int, device: object) -> None:
        """Announce the plan."""
        self._write(
            f"sweep  {planned} runs planned, {skipped} already done, "
            f"{planned - skipped} to train in {groups} group(s) on {device}"
        )

    def group_started(self, index: int, total: int, group, resumed: int) -> None:
        """A group begins (or resumes after ``resumed`` epochs)."""
        epochs = group.runs[0].epochs
        if self.use_bar and self._bar is None:
            self._bar = tqdm(total=0, unit="model-epoch", file=self.stream, dynamic_ncols=True)
        if self._bar is not None:
            self._bar.total += len(group.runs) * (epochs - resumed)
            self._bar.refresh()
        note = f", resuming after epoch {resumed}" if resumed else ""
        self._write(f"group  {index}/{total}  {len(group.runs)} runs x {epochs} epochs{note}")

    def epoch_done(self, group, report) -> None:
        """One line per epoch, and one per run while the group is small."""
        n = len(group.runs)
        epochs = group.runs[0].epochs
        per_model = report.seconds / n
        self._write(
            f"epoch {report.epoch:>3}/{epochs:<3}  train {report.seconds:7.1f} s  "
            f"{per_model:6.2f} s/model-epoch"
        )
        if n <= DETAIL_LIMIT:
            for g, run in enumerate(group.runs):
                self._write(
                    f"    {report.activations[g]:<10} {run.range.label:>12}  seed {run.seed:<5} "
                    f"lr {format_number(run.lr):<6}  train loss {report.train_loss[g]:8.4f}  "
                    f"test loss {report.test_loss[g]:8.4f}  "
                    f"test acc {report.test_accuracy[g]:6.2f} %"
                )
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        """Close the bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
