"""The one progress bar / verbose logger every solver uses.

Usage inside an iterative solver::

    with progress(max_iter, verbose, desc="admm") as bar:
        for it in range(max_iter):
            ...
            bar.update(residual=r, gap=g)      # shown every few iterations

With ``verbose=False`` the bar is a no-op with no overhead beyond a call.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm


class Progress:
    """A thin wrapper over :class:`tqdm.tqdm` that is silent when disabled."""

    def __init__(self, total: int | None, enabled: bool, desc: str, refresh_every: int = 10):
        self.enabled = enabled
        self.refresh_every = max(1, refresh_every)
        self._count = 0
        self._bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=True,
                         dynamic_ncols=True) if enabled else None

    def update(self, n: int = 1, **metrics: float) -> None:
        """Advance by ``n`` iterations; show ``metrics`` now and then."""
        if self._bar is None:
            return
        self._count += n
        self._bar.update(n)
        if metrics and self._count % self.refresh_every == 0:
            self._bar.set_postfix({k: f"{float(v):.3g}" for k, v in metrics.items()},
                                  refresh=False)

    def log(self, message: str) -> None:
        """Print a message without breaking the bar (only when enabled)."""
        if self.enabled:
            tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextmanager
def progress(total: int | None, verbose: bool, desc: str = "solve",
             refresh_every: int = 10) -> Iterator[Progress]:
    """Context manager yielding a :class:`Progress` (silent unless ``verbose``)."""
    bar = Progress(total, bool(verbose), desc, refresh_every)
    try:
        yield bar
    finally:
        bar.close()
