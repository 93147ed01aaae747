"""How well the RF layer learned the RFs: median centre error per area, at init and after training.

Against the session's true RFs (a virtual macaque stores them) and, as the control, against the
true RFs of *another* virtual monkey with the same layout (another simulator seed): its RFs lie on
the same per-array grid with other jitter, so "copy another monkey's RFs" is the bar a learned
map must beat to say anything about this monkey. Errors are % of the image width (median over
the area's electrodes); see rtdecode.metrics.rf_recovery.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtdecode.layout import ElectrodeLayout
from rtdecode.metrics import rf_recovery


def other_monkey_centres(layout: ElectrodeLayout, rf_true: np.ndarray, first_seed: int = 1,
                         tries: int = 8) -> tuple[np.ndarray, int]:
    """([E, 2] true RF centres of another virtual monkey on this layout, its simulator seed).

    The first seed from `first_seed` whose RFs differ from `rf_true` (the session's own seed is
    not stored with the decoding data, so a seed that reproduces rf_true is skipped).
    """
    from rtdecode.sim import VirtualMacaque

    used = layout.used_channels
    true = np.asarray(rf_true, dtype=np.float64)
    for seed in range(first_seed, first_seed + tries):
        other = VirtualMacaque(layout, image_size=8, seed=seed).ground_truth()["rf_centres"][used]
        if other.shape != true.shape:
            raise ValueError(f"layout gives {other.shape[0]} electrodes but the true RFs hold {true.shape[0]}")
        if np.nanmax(np.abs(other - true)) > 1e-6:
            return other, seed
    raise ValueError(f"seeds {first_seed}..{first_seed + tries - 1} all reproduce the session's RFs")


def _pct(rec: dict[str, Any], area: str) -> float | None:
    return round(rec[area]["median_pct_width"], 3) if area in rec else None


def rf_report(init: np.ndarray, learned: np.ndarray, true: np.ndarray, areas: np.ndarray | list[str],
              image_width_px: int, other: np.ndarray | None = None, other_seed: int | None = None) -> dict[str, Any]:
    """Per area (and 'all'): median centre error (% of width) of init and learned centres vs the truth,
    of the learned centres vs another monkey's RFs, and of that monkey's RFs vs the truth (the control).

    `closer_than_other`: learned centres nearer their own monkey than the other one; `beats_copy`:
    learned centres nearer the truth than copying the other monkey's RFs would be.
    """
    areas = np.asarray(areas, dtype=object)
    at_init = rf_recovery(init, true, areas, image_width_px)
    after = rf_recovery(learned, true, areas, image_width_px)
    vs_other = rf_recovery(learned, other, areas, image_width_px) if other is not None else {}
    control = rf_recovery(other, true, areas, image_width_px) if other is not None else {}
    out: dict[str, Any] = {"unit": "median centre error, % of image width", "other_monkey_seed": other_seed,
                           "areas": {}}
    for area in after:
        row = {"n_electrodes": after[area]["n_electrodes"], "init_vs_true": _pct(at_init, area),
               "learned_vs_true": _pct(after, area), "learned_vs_other": _pct(vs_other, area),
               "other_vs_true": _pct(control, area)}
        if other is not None:
            row["closer_than_other"] = bool(row["learned_vs_true"] < row["learned_vs_other"])
            row["beats_copy"] = bool(row["learned_vs_true"] < row["other_vs_true"])
        out["areas"][area] = row
    return out


def format_rf_report(report: dict[str, Any]) -> str:
    """One line per area: init -> learned (vs true), learned vs other monkey, other monkey vs true."""
    lines = [f"RF centres ({report['unit']}): init -> learned vs true | learned vs other monkey | other vs true"]
    for area, r in report["areas"].items():
        lines.append(f"  {area}: {r['init_vs_true']:.2f} -> {r['learned_vs_true']:.2f} | "
                     f"{_fmt(r['learned_vs_other'])} | {_fmt(r['other_vs_true'])}")
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
