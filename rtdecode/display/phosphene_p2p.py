"""The pulse2percept backend of PhospheneRenderer: phosphenes drawn by pulse2percept's cortical model.

Why a second renderer: pulse2percept (Beyeler et al. 2017; v0.11) is the field's reference
simulator. Its cortical `ScoreboardModel` spreads each electrode's current as a Gaussian of width
`rho` over the V1 surface and carries it into the visual field through the Polimeni et al. (2006)
wedge-dipole map, so a phosphene's size and shape (stretched along the meridians, split at the
vertical meridian) follow that map rather than rtdecode's isotropic blobs. It is about three orders
of magnitude slower than the builtin renderer, so it is for offline exports and comparisons.

Implants (`implant=`):
  grid       one point electrode per phosphene of the renderer (1024 by default): at the V1
             location, in the Polimeni map, of every position rtdecode's cortical map chose
             (or of `positions=` / a layout's RF centres). Same positions as the builtin backend.
  cortivis   the 96-channel Utah (NeuroPort) array of the CORTIVIS studies   } pulse2percept's
  orion      Orion's 60 epicortical disc electrodes                         } devices, centred at
  icvp       the ICVP's 16 wireless floating electrodes                      } the V1 location of
                                                                              `implant_at_deg`
For the named devices the renderer's phosphenes are the electrodes whose phosphene lies inside the
field of view; the stimulation samples the frame there like the builtin backend does.

Conventions: rtdecode's visual-field positions are (x right, y down) in degrees from fixation;
pulse2percept's are (x right, y up). The percept grid spans the renderer's field of view with one
grid point per output pixel, top row first.

pulse2percept is optional (`pip install 'rtdecode[p2p]'`); it is imported only when this backend
is asked for, and a missing install raises ConfigError naming the extra.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ..errors import ConfigError

IMPLANTS = ("grid", "cortivis", "orion", "icvp")
_DEVICE_CLASS = {"cortivis": "NeuroPortArray", "orion": "Orion", "icvp": "ICVP"}
INSTALL_HINT = "pip install 'rtdecode[p2p]' (or: pip install pulse2percept==0.11.0)"


def require_pulse2percept() -> Any:
    """Import pulse2percept or raise ConfigError naming the extra that installs it."""
    try:
        return importlib.import_module("pulse2percept")
    except ImportError as e:
        raise ConfigError(f"phosphene backend 'pulse2percept' needs the Python package pulse2percept, which is "
                          f"not installed ({e}); install it with `{INSTALL_HINT}` or use backend 'builtin'") from e


def _device(name: str):
    require_pulse2percept()
    from pulse2percept.implants import cortex

    implant = getattr(cortex, _DEVICE_CLASS[name])()
    # only activated electrodes take a stimulus (the ICVP's reference 'R' and counter 'C' do not)
    names = [str(n) for n, e in implant.electrodes.items() if e.activated]
    return implant, names


def _check_implant(implant: str) -> None:
    if implant not in IMPLANTS:
        raise ConfigError(f"pulse2percept implant must be one of {IMPLANTS}, got {implant!r}")


def device_positions(implant: str, fov_deg: float, at_deg: tuple[float, float]) -> tuple[list[str], np.ndarray]:
    """Electrode names and phosphene positions (deg, x right, y down) of a named pulse2percept device
    placed with its centre at the V1 location of `at_deg` (x right, y down), keeping the electrodes
    whose phosphene lies inside the field of view (a disc of diameter `fov_deg`'s square)."""
    _check_implant(implant)
    if implant == "grid":
        raise ConfigError("implant 'grid' takes its positions from the renderer, not from a device")
    from pulse2percept.topography.cortex import Polimeni2006Map

    device, names = _device(implant)
    vf = Polimeni2006Map()
    cx, cy = vf.dva_to_v1(np.float64(at_deg[0]), np.float64(-at_deg[1]))
    if not (np.isfinite(cx) and np.isfinite(cy)):
        raise ConfigError(f"implant_at_deg {tuple(at_deg)} does not map onto V1 in the Polimeni map")
    ex = np.array([device[n].x for n in names], dtype=np.float64)
    ey = np.array([device[n].y for n in names], dtype=np.float64)
    x, y = vf.v1_to_dva(cx + ex, cy + ey)
    deg = np.stack([np.asarray(x, np.float64), -np.asarray(y, np.float64)], axis=1)
    half = fov_deg / 2.0
    inside = np.isfinite(deg).all(axis=1) & (np.abs(deg) < half).all(axis=1)
    if not inside.any():
        raise ConfigError(f"no electrode of {implant!r} placed at {tuple(at_deg)} deg has its phosphene inside "
                          f"the {fov_deg} deg field of view; move implant_at_deg")
    return [n for n, k in zip(names, inside, strict=True) if k], deg[inside]


class Pulse2PerceptDrawer:
    """Brightness per phosphene -> percept canvas float32 [H, W] in [0, 1] from ScoreboardModel.

    `positions_deg` [N, 2] (x right, y down): the renderer's phosphenes. `implant` 'grid' puts a
    point electrode at each one's V1 location; a device name ('cortivis', 'orion', 'icvp') uses that
    device placed at `at_deg`, and `electrodes` names the device electrodes the N phosphenes are
    (from `device_positions`). `rho_um`: current spread on the cortex (pulse2percept's default 200).
    `threads`: OpenMP threads of the model (1: leave the cores to the decoder).
    """

    def __init__(self, positions_deg: np.ndarray, size: tuple[int, int], fov_deg: float, *,
                 implant: str = "grid", at_deg: tuple[float, float] = (2.0, 2.0),
                 electrodes: list[str] | None = None, rho_um: float = 200.0, threads: int = 1):
        _check_implant(implant)
        require_pulse2percept()
        from pulse2percept.implants import ElectrodeArray, PointSource
        from pulse2percept.implants.cortex import CorticalImplant
        from pulse2percept.models.cortex import ScoreboardModel
        from pulse2percept.topography.cortex import Polimeni2006Map
        from pulse2percept.units import dva

        if not rho_um > 0:
            raise ConfigError(f"rho_um must be > 0, got {rho_um}")
        pos = np.asarray(positions_deg, dtype=np.float64)
        self.implant_name = implant
        self.size = (int(size[0]), int(size[1]))
        self.n = len(pos)
        vf = Polimeni2006Map()
        placement: dict[str, Any] = {}
        if implant == "grid":
            x, y = vf.dva_to_v1(pos[:, 0], -pos[:, 1])
            bad = ~(np.isfinite(x) & np.isfinite(y))
            if bad.any():
                raise ConfigError(f"{int(bad.sum())} phosphene position(s) do not map onto V1 in the Polimeni map "
                                  f"(first: {pos[np.argmax(bad)]} deg)")
            self.electrodes = [f"e{i}" for i in range(self.n)]
            device = CorticalImplant(ElectrodeArray({n: PointSource(float(a), float(b), 0.0)
                                                     for n, a, b in zip(self.electrodes, x, y, strict=True)}))
        else:
            device, all_names = _device(implant)
            if electrodes is None or len(electrodes) != self.n:
                raise ConfigError(f"implant {implant!r} needs the names of its {self.n} electrodes "
                                  "(from device_positions)")
            unknown = sorted(set(electrodes) - set(all_names))
            if unknown:
                raise ConfigError(f"implant {implant!r} has no stimulating electrode(s) {unknown}")
            self.electrodes = list(electrodes)
            placement["implant_position"] = (float(at_deg[0]), -float(at_deg[1])) * dva
        h, w = self.size
        half = fov_deg / 2.0
        self.model = ScoreboardModel(device, xrange=(-half, half), yrange=(-half, half),
                                     step=(fov_deg / (w - 1), fov_deg / (h - 1)), rho=float(rho_um),
                                     visual_field_map=vf, n_threads=int(threads), verbose=False, **placement)
        self.model.build()
        grid = self.model.spatial.grid
        if tuple(grid.shape) != (h, w):  # pragma: no cover - guards pulse2percept's grid rounding
            raise ConfigError(f"pulse2percept built a {grid.shape} grid for a {(h, w)} output")
        self._amp = np.zeros(len(self.electrodes), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"implant": self.implant_name, "electrodes": len(self.electrodes), "phosphenes": self.n,
                "rho_um": float(self.model.spatial.rho), "visual_field_map": "Polimeni2006Map",
                "model": "ScoreboardModel", "pulse2percept": require_pulse2percept().__version__}

    def draw(self, brightness: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Brightness [N] in [0, 1] -> `out` (float32 [H, W]) clipped to [0, 1]; top row = up."""
        self._amp[:] = brightness
        if not self._amp.any():  # nothing stimulated: nothing to see, no model call
            out.fill(0.0)
            return out
        # a device gets {electrode: amplitude} (its own electrode list may hold non-stimulating ones,
        # e.g. the ICVP's 'R' and 'C', which an array stimulus would have to cover)
        stim = self._amp if self.implant_name == "grid" else dict(zip(self.electrodes, self._amp.tolist(), strict=True))
        percept = self.model.predict_percept(stim)
        np.clip(percept.data[..., 0], 0.0, 1.0, out=out)
        return out
