"""Prosthetic-vision rendering: a decoded frame as the phosphenes a 1024-electrode V1 implant would evoke.

Pipeline, per frame:
  1. stimulation: the frame's luminance sampled at each phosphene's visual-field position with a
     small normalised Gaussian (its width follows the phosphene's own size) -> float32 [N] in [0, 1].
  2. brightness: thresholded and saturating, b = clip((s - threshold) / (saturation - threshold), 0, 1).
  3. drawing: every phosphene is an isotropic Gaussian blob of peak b at its position, summed and
     clipped to [0, 1], shown as grey levels (uint8 H x W x 3).

Phosphene positions come from a cortical map: electrodes spread evenly (a jittered grid, like Utah
arrays tiling the cortical surface) over both V1 hemispheres, mapped to the visual field through
the inverse of the monopole log-polar map w = k log(1 + z / a) (Schwartz 1977; k = 17.3 mm,
a = 0.75 deg after Horton & Hoyt 1991). Evenly spaced electrodes therefore give phosphenes that
are dense near the fovea and sparse in the periphery. A phosphene's size is the cortical spread of
the current divided by the cortical magnification M(E) = k / (E + a) mm/deg, so it grows linearly
with eccentricity E. Known receptive-field centres (e.g. `ElectrodeLayout.rf_centres`) can replace
the map via `positions=`.

Speed: an isotropic Gaussian is separable (blob_i = gy_i gx_i^T), so the image is Gy^T diag(b) Gx.
Truncated at 4 sigma, the profiles are short, so their outer products are precomputed once as a
sparse blob atlas (~270 k (pixel, weight, phosphene) triples for 1024 phosphenes at 256 x 256) and
drawing is one gather-multiply-bincount: single-threaded, so it does not compete with the decoder
for BLAS threads, and about 20x less arithmetic than the dense [H, N] x [N, W] product. Sampling
the frame (stimulation) uses the same sparse form in reverse. Backend "dynaphos" uses dynaphos' GaussianSimulator (temporal dynamics, current-dependent
size, psychometric thresholds) with the parameters in `DYNAPHOS_PARAMS`, about two orders of
magnitude slower; dynaphos, torch, PyYAML, SciPy and OpenCV are needed for it and never required.
Backend "pulse2percept" draws with pulse2percept's cortical ScoreboardModel and the Polimeni (2006)
visual-field map, on the same positions or on one of its devices (rtdecode.display.phosphene_p2p;
the optional extra `p2p`), about three orders of magnitude slower than the builtin drawing.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..protocol import to_uint8

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luminance weights

# Parameters of dynaphos' GaussianSimulator for the "dynaphos" backend. dynaphos ships no params file;
# these follow the values published with it (van der Grinten et al., eLife 2024) where they are
# physiological, and rtdecode's own display settings elsewhere ('run' is filled in per renderer).
DYNAPHOS_PARAMS: dict[str, dict[str, Any]] = {
    "run": {"fps": 10, "seed": 0, "dtype": "float32", "gpu": None, "batch_size": 0,
            "print_stats": False, "resolution": [256, 256], "view_angle": 16.0, "origin": [0.0, 0.0],
            "min_angle": 0.0},
    "gabor": {"gabor_filtering": False, "gamma": 1.5},
    "sampling": {"sampling_method": "center", "RF_size": 0.5, "stimulus_scale": 2.0e-4},  # stimulation 1 -> 200 uA
    "cortex_model": {"model": "monopole", "k": 17.3, "a": 0.75, "b": 120.0, "alpha": 14.0,
                     "dropout_rate": 0.0, "noise_scale": 0.0},
    "default_stim": {"relative_stim_duration": 1.0, "pw_default": 170.0e-6, "freq_default": 300.0,
                     "stim_amp_default": 100.0e-6},
    "temporal_dynamics": {"trace_increase_rate": 13.95581, "activation_decay_per_second": 1.0e-8,
                          "trace_decay_per_second": 0.99997},
    "thresholding": {"use_threshold": True, "rheobase": 23.9e-6, "activation_threshold": 9.141e-8,
                     "activation_threshold_sd": 6.47e-9},
    "brightness_saturation": {"cps_half": 1.057e-7, "slope_brightness": 19152642.5},
    "size": {"size_equation": "sqrt", "current_spread": 675.0e-6, "radius_to_sigma": 0.5,
             "MD": 0.7, "I_half": 20.0e-6, "slope_size": 0.175e6},
}

BACKENDS = ("builtin", "dynaphos", "pulse2percept")


def cortical_magnification(ecc_deg: np.ndarray, k: float = 17.3, a: float = 0.75) -> np.ndarray:
    """Monopole cortical magnification M(E) = k / (E + a), in mm of V1 per degree of visual angle."""
    return k / (np.asarray(ecc_deg, dtype=np.float64) + a)


def cortical_map_positions(n: int, fov_deg: float, *, seed: int = 0, k: float = 17.3,
                           a: float = 0.75) -> np.ndarray:
    """Visual-field positions (deg; x right, y down, 0 = fixation) of n electrodes evenly tiling V1.

    Each hemisphere's cortex is tiled by a jittered square grid in the monopole map's cortical
    coordinates w = k log(1 + z / a); grid points whose visual position lies in the contralateral
    half of the disc of radius fov_deg / 2 are kept, the spacing shrinks until there are at least n,
    and n of them are chosen at random (seeded). Returns float64 [n, 2].
    """
    if n < 1:
        raise ConfigError(f"n_phosphenes must be >= 1, got {n}")
    if not fov_deg > 0:
        raise ConfigError(f"fov_deg must be > 0, got {fov_deg}")
    rng = np.random.default_rng(seed)
    radius = fov_deg / 2.0
    u_max = k * np.log1p(radius / a)  # cortical distance of the disc's edge on the horizontal meridian
    v_max = k * np.pi / 2  # |k arg(1 + z/a)| < k pi/2 for a right half-plane z
    spacing = np.sqrt(u_max * 2 * v_max / n)
    for _ in range(200):
        us = np.arange(spacing / 2, u_max, spacing)
        vs = np.arange(-v_max + spacing / 2, v_max, spacing)
        pts = []
        for mirror in (1.0, -1.0):  # left hemisphere -> right hemifield, and vice versa
            uu, vv = np.meshgrid(us, vs)
            jitter = rng.uniform(-0.25, 0.25, size=(2, *uu.shape)) * spacing
            w = (uu + jitter[0]) + 1j * (vv + jitter[1])
            z = a * (np.exp(w / k) - 1.0)
            z = z[(np.abs(z) <= radius) & (z.real >= 0)]
            pts.append(np.stack([mirror * z.real, z.imag], axis=1))
        allpts = np.concatenate(pts)
        if len(allpts) >= n:
            pick = rng.choice(len(allpts), size=n, replace=False)
            return allpts[np.sort(pick)]
        spacing *= 0.97
    raise ConfigError(f"could not place {n} phosphenes in a {fov_deg} deg field")  # pragma: no cover


def _sparse_atlas(gy: np.ndarray, gx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Separable profiles gy [N, H], gx [N, W] -> the nonzero (flat pixel, weight, phosphene) triples
    of every outer product gy[i] x gx[i], i.e. a sparse [N, H*W] blob atlas in coordinate form."""
    width = gx.shape[1]
    idx, val, own = [], [], []
    for i in range(gx.shape[0]):
        xs, ys = np.flatnonzero(gx[i]), np.flatnonzero(gy[i])
        idx.append((ys[:, None] * width + xs[None, :]).ravel())
        val.append(np.outer(gy[i, ys], gx[i, xs]).ravel())
        own.append(np.full(len(ys) * len(xs), i, dtype=np.intp))
    return (np.concatenate(idx).astype(np.intp), np.concatenate(val).astype(np.float32), np.concatenate(own))


def _gaussian_rows(centres_px: np.ndarray, sigmas_px: np.ndarray, length: int, normalise: bool) -> np.ndarray:
    """[N, length] Gaussian profiles at pixel centres (pixel i covers [i, i+1), centre i + 0.5)."""
    grid = np.arange(length, dtype=np.float64) + 0.5
    d = (grid[None, :] - centres_px[:, None]) / sigmas_px[:, None]
    g = np.exp(-0.5 * d * d)
    g[np.abs(d) > 4.0] = 0.0  # truncated: keeps blobs local, no faint global haze
    if normalise:
        s = g.sum(axis=1, keepdims=True)
        g /= np.where(s > 0, s, 1.0)
    return g.astype(np.float32)


class PhospheneRenderer:
    """Frame -> stimulation per electrode -> phosphene image (uint8 H x W x 3).

    `render(image)` is `draw(brightness(stimulation(image)))`. The builtin backend allocates nothing
    per frame once it has seen an input size (buffers are reused: the returned array is overwritten
    by the next call; copy it to keep it). Not thread-safe: one renderer per display thread.
    """

    def __init__(self, n_phosphenes: int = 1024, size: tuple[int, int] = (256, 256), seed: int = 0,
                 backend: str = "builtin", *, fov_deg: float = 16.0, positions: np.ndarray | None = None,
                 threshold: float = 0.1, saturation: float = 0.8, cortical_spread_mm: float = 0.5,
                 sample_scale: float = 0.5, min_sigma_px: float = 0.6, k_mm: float = 17.3,
                 a_deg: float = 0.75, temporal: bool = False, dynaphos_params: dict | None = None,
                 p2p_implant: str = "grid", p2p_at_deg: tuple[float, float] = (2.0, 2.0),
                 p2p_rho_um: float = 200.0, p2p_threads: int = 1):
        if backend not in BACKENDS:
            raise ConfigError(f"phosphene backend must be one of {BACKENDS}, got {backend!r}")
        if len(size) != 2 or int(size[0]) < 2 or int(size[1]) < 2:
            raise ConfigError(f"size must be (H, W) with both >= 2, got {size!r}")
        if not 0.0 <= threshold < saturation <= 1.0:
            raise ConfigError(f"need 0 <= threshold < saturation <= 1, got threshold={threshold}, saturation={saturation}")
        if not cortical_spread_mm > 0 or not sample_scale > 0 or not fov_deg > 0:
            raise ConfigError("cortical_spread_mm, sample_scale and fov_deg must be > 0")
        self.backend = backend
        self.size = (int(size[0]), int(size[1]))
        self.fov_deg = float(fov_deg)
        self.threshold, self.saturation = float(threshold), float(saturation)
        self.k_mm, self.a_deg = float(k_mm), float(a_deg)
        self.temporal = bool(temporal)
        p2p_electrodes = None
        if backend == "pulse2percept" and p2p_implant != "grid":  # a device: its electrodes are the phosphenes
            if positions is not None:
                raise ConfigError(f"positions= is for implant 'grid'; the {p2p_implant!r} device has its own")
            from .phosphene_p2p import device_positions

            p2p_electrodes, deg = device_positions(p2p_implant, self.fov_deg, p2p_at_deg)
            positions = deg / self.fov_deg + 0.5
        if positions is None:
            deg = cortical_map_positions(int(n_phosphenes), self.fov_deg, seed=seed, k=k_mm, a=a_deg)
            self.positions = (deg / self.fov_deg + 0.5).astype(np.float64)
        else:
            pos = np.asarray(positions, dtype=np.float64)
            if pos.ndim != 2 or pos.shape[1] != 2 or len(pos) == 0:
                raise ConfigError(f"positions must have shape [N, 2] (x, y image-normalised), got {pos.shape}")
            if not np.isfinite(pos).all() or pos.min() < 0 or pos.max() > 1:
                raise ConfigError("positions must be finite and within [0, 1] (drop electrodes without a known RF first)")
            self.positions = pos.copy()
        self.n_phosphenes = len(self.positions)
        self.channels: np.ndarray | None = None  # stream channel per phosphene (from_layout)
        deg = (self.positions - 0.5) * self.fov_deg
        self.eccentricity_deg = np.hypot(deg[:, 0], deg[:, 1])
        self.sigma_deg = cortical_spread_mm / cortical_magnification(self.eccentricity_deg, k_mm, a_deg)
        h, w = self.size
        px_per_deg_x, px_per_deg_y = w / self.fov_deg, h / self.fov_deg
        self.sigma_px = np.maximum(self.sigma_deg * px_per_deg_x, min_sigma_px)
        self._sample_scale = float(sample_scale)
        # drawing basis: separable profiles (image = Gy^T diag(b) Gx) stored as a sparse blob atlas
        sig_x = np.maximum(self.sigma_deg * px_per_deg_x, min_sigma_px)
        sig_y = np.maximum(self.sigma_deg * px_per_deg_y, min_sigma_px)
        self._gx = _gaussian_rows(self.positions[:, 0] * w, sig_x, w, normalise=False)  # [N, W]
        self._gy = _gaussian_rows(self.positions[:, 1] * h, sig_y, h, normalise=False)  # [N, H]
        self._pix, self._val, self._own = _sparse_atlas(self._gy, self._gx)
        self._weights = np.empty_like(self._val)
        self._canvas = np.empty((h, w), dtype=np.float32)
        self._out = np.empty((h, w, 3), dtype=np.uint8)
        self._bright = np.empty(self.n_phosphenes, dtype=np.float32)
        self._sampler: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        self._sim = None
        if backend == "dynaphos":
            self._sim = self._make_dynaphos(seed, dynaphos_params)
        self._p2p = None
        if backend == "pulse2percept":
            from .phosphene_p2p import Pulse2PerceptDrawer

            self._p2p = Pulse2PerceptDrawer((self.positions - 0.5) * self.fov_deg, self.size, self.fov_deg,
                                            implant=p2p_implant, at_deg=p2p_at_deg, electrodes=p2p_electrodes,
                                            rho_um=p2p_rho_um, threads=p2p_threads)

    @classmethod
    def from_layout(cls, layout: Any, **kwargs: Any) -> PhospheneRenderer:
        """One phosphene per usable electrode with a known RF centre inside the image (homeomorphic).

        `layout` is an rtdecode.layout.ElectrodeLayout with rf_centres; `renderer.channels` then holds
        the stream channel of each phosphene.
        """
        if getattr(layout, "rf_centres", None) is None:
            raise ConfigError(f"layout {getattr(layout, 'name', layout)!r} has no rf_centres; "
                              "phosphene positions need known receptive-field centres")
        rf = np.asarray(layout.rf_centres, dtype=np.float64)
        ok = np.asarray(layout.usable) & np.isfinite(rf).all(axis=1) & (rf >= 0).all(axis=1) & (rf <= 1).all(axis=1)
        if not ok.any():
            raise ConfigError(f"layout {layout.name!r}: no usable electrode has an RF centre inside the image")
        renderer = cls(positions=rf[ok], **kwargs)
        renderer.channels = np.flatnonzero(ok)
        return renderer

    # ---- stimulation ---------------------------------------------------------------------
    def _sampling(self, hi: int, wi: int) -> tuple[np.ndarray, ...]:
        """Sparse sampling weights for an input size (cached): pixel, weight, phosphene, work buffers."""
        key = (hi, wi)
        if key not in self._sampler:
            sx = np.maximum(self.sigma_deg * wi / self.fov_deg * self._sample_scale, 0.5)
            sy = np.maximum(self.sigma_deg * hi / self.fov_deg * self._sample_scale, 0.5)
            s_x = _gaussian_rows(self.positions[:, 0] * wi, sx, wi, normalise=True)  # [N, Wi], rows sum to 1
            s_y = _gaussian_rows(self.positions[:, 1] * hi, sy, hi, normalise=True)  # [N, Hi]
            pix, val, own = _sparse_atlas(s_y, s_x)
            self._sampler[key] = (pix, val, own, np.empty((hi, wi), np.float32),
                                  np.empty((hi, wi, 3), np.float32), np.empty(len(val), np.float32))
        return self._sampler[key]

    def luminance(self, image: np.ndarray) -> np.ndarray:
        """Image (uint8 0..255 or float 0..1; H x W x 3 RGB or H x W grey) -> float32 [H, W] in [0, 1].

        Returns a buffer owned by the renderer (reused for the next image of the same size).
        """
        img = np.asarray(image)
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
            raise ConfigError(f"image must be H x W x 3 (RGB) or H x W (grey), got shape {img.shape}")
        lum, rgb = self._sampling(img.shape[0], img.shape[1])[3:5]
        if img.ndim == 3:
            np.copyto(rgb, img[..., :3], casting="unsafe")
            np.matmul(rgb, LUMA, out=lum)
        else:
            np.copyto(lum, img, casting="unsafe")
        if img.dtype == np.uint8:
            lum *= np.float32(1.0 / 255.0)
        return lum

    def stimulation(self, image: np.ndarray) -> np.ndarray:
        """Per-electrode stimulation float32 [n_phosphenes] in [0, 1]: Gaussian-weighted luminance."""
        lum = self.luminance(image)
        pix, val, own, _, _, work = self._sampling(lum.shape[0], lum.shape[1])
        np.take(lum.reshape(-1), pix, out=work)
        work *= val
        stim = np.bincount(own, weights=work, minlength=self.n_phosphenes).astype(np.float32)
        np.clip(stim, 0.0, 1.0, out=stim)
        return stim

    def brightness(self, stim: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Thresholded, saturating brightness in [0, 1]: zero below `threshold`, one above `saturation`."""
        out = self._bright if out is None else out
        np.subtract(stim, self.threshold, out=out)
        out *= np.float32(1.0 / (self.saturation - self.threshold))
        np.clip(out, 0.0, 1.0, out=out)
        return out

    # ---- drawing -------------------------------------------------------------------------
    def draw(self, brightness: np.ndarray) -> np.ndarray:
        """Brightness per phosphene [N] in [0, 1] -> uint8 [H, W, 3] (builtin drawing, reused buffer)."""
        b = np.asarray(brightness, dtype=np.float32)
        if b.shape != (self.n_phosphenes,):
            raise ConfigError(f"brightness must have shape ({self.n_phosphenes},), got {b.shape}")
        np.take(b, self._own, out=self._weights)
        self._weights *= self._val
        summed = np.bincount(self._pix, weights=self._weights, minlength=self._canvas.size)
        np.copyto(self._canvas.reshape(-1), summed, casting="same_kind")
        return self._to_uint8(self._canvas)

    def _to_uint8(self, canvas: np.ndarray) -> np.ndarray:
        """Grey canvas [H, W] in [0, 1] -> self._out uint8 [H, W, 3], in place (canvas is scratch)."""
        grey = canvas[:, :, None]
        return to_uint8(grey, self._out, scratch=grey)

    def render(self, image: np.ndarray) -> np.ndarray:
        """Frame (uint8 H x W x 3, or float in [0, 1]) -> phosphene image uint8 [H_out, W_out, 3]."""
        stim = self.stimulation(image)
        if self._sim is not None:
            return self._render_dynaphos(stim)
        if self._p2p is not None:
            return self._to_uint8(self._p2p.draw(self.brightness(stim), self._canvas))
        return self.draw(self.brightness(stim))

    def side_by_side(self, image: np.ndarray, gap: int = 4) -> np.ndarray:
        """[frame resized to the output size | gap | phosphenes] as a new uint8 [H, 2W + gap, 3]."""
        h, w = self.size
        img = to_uint8(image)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        rows = (np.arange(h) * img.shape[0]) // h
        cols = (np.arange(w) * img.shape[1]) // w
        out = np.zeros((h, 2 * w + gap, 3), dtype=np.uint8)
        out[:, :w] = img[rows][:, cols, :3]
        out[:, w + gap:] = self.render(image)
        return out

    def describe(self) -> dict[str, Any]:
        """Settings, for logs and recordings."""
        return {"backend": self.backend, "n_phosphenes": self.n_phosphenes, "size": list(self.size),
                "fov_deg": self.fov_deg, "threshold": self.threshold, "saturation": self.saturation,
                "k_mm": self.k_mm, "a_deg": self.a_deg,
                "sigma_px_range": [float(self.sigma_px.min()), float(self.sigma_px.max())],
                **({"pulse2percept": self._p2p.describe()} if self._p2p is not None else {})}

    # ---- dynaphos backend ----------------------------------------------------------------
    def dynaphos_params(self, overrides: dict | None = None) -> dict:
        """The full dynaphos params dict this renderer uses (DYNAPHOS_PARAMS + display settings)."""
        p = copy.deepcopy(DYNAPHOS_PARAMS)
        for section, values in (overrides or {}).items():
            if section not in p or not isinstance(values, dict):
                raise ConfigError(f"unknown dynaphos params section {section!r}; expected one of {sorted(p)}")
            p[section].update(values)
        h, w = self.size
        p["run"].update({"resolution": [w, h], "view_angle": self.fov_deg})
        p["cortex_model"].update({"k": self.k_mm, "a": self.a_deg})
        return p

    def _make_dynaphos(self, seed: int, overrides: dict | None):
        # dynaphos first (the package itself), then what its wheel needs but does not declare
        for mod, pip_name in (("dynaphos", "dynaphos"), ("torch", "torch"), ("yaml", "pyyaml"),
                              ("scipy", "scipy"), ("cv2", "opencv-python-headless"),
                              ("matplotlib", "matplotlib")):
            try:
                importlib.import_module(mod)
            except ImportError as e:
                raise ConfigError(f"phosphene backend 'dynaphos' needs the Python module {mod!r}, which is not "
                                  f"installed ({e}); install it with `pip install {pip_name}` or use backend "
                                  f"'builtin'") from e
        import torch
        from dynaphos.simulator import GaussianSimulator
        from dynaphos.utils import Map

        params = self.dynaphos_params(overrides)
        params["run"]["seed"] = int(seed)
        deg = (self.positions - 0.5) * self.fov_deg  # x right, y down = dynaphos' row order
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        try:  # GaussianSimulator switches torch to deterministic algorithms process-wide; undo that
            sim = GaussianSimulator(params, Map(x=deg[:, 0].copy(), y=deg[:, 1].copy()),
                                    rng=np.random.default_rng(seed))
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
        if sim.num_phosphenes != self.n_phosphenes:  # dynaphos drops phosphenes outside the view
            raise ConfigError(f"dynaphos kept {sim.num_phosphenes} of {self.n_phosphenes} phosphenes; "
                              "positions must lie inside the field of view")
        self._torch = torch
        self._stim_scale = float(params["sampling"]["stimulus_scale"])
        return sim

    def _render_dynaphos(self, stim: np.ndarray) -> np.ndarray:
        torch = self._torch
        if not self.temporal:
            self._sim.reset()
        with torch.no_grad():
            amp = torch.from_numpy(stim * np.float32(self._stim_scale))
            frame = self._sim(amp)
        np.copyto(self._canvas, frame.cpu().numpy())
        return self._to_uint8(self._canvas)


def write_side_by_side(renderer: PhospheneRenderer, images: list[np.ndarray], path: str | Path,
                       fps: float = 10.0) -> Path:
    """Write [frame | phosphenes] panels: a PNG for one image, an animated GIF for several."""
    from PIL import Image

    path = Path(path)
    if not images:
        raise ConfigError("write_side_by_side needs at least one image")
    panels = [Image.fromarray(renderer.side_by_side(im)) for im in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        panels[0].save(path, save_all=True, append_images=panels[1:], duration=int(1000 / fps), loop=0)
    elif path.suffix.lower() == ".png":
        panels[0].save(path)
    else:
        raise ConfigError(f"side-by-side output must end in .png or .gif, got {path.name!r}")
    return path
