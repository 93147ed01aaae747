"""One progress helper for long work (simulation, dataset windows, training, export, playback)."""

from __future__ import annotations

from typing import Any


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar when tqdm is installed and progress is wanted, else a silent stand-in."""
    if not enabled:
        return _NullBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NullBar()
    return tqdm(total=total, desc=desc, unit="trial", leave=False, mininterval=0.5)
