"""Stimuli for the virtual macaque: procedural naturalistic colour images, or the user's own.

`dead_leaves` paints occluding discs whose radii follow a power law (density ~ r^-3), which gives
the 1/f amplitude spectrum of natural images, in naturalistic colours. `load_image_folder`
reads a folder of PNG/JPEG files, centre-cropped to a square and resized.

Both return uint8 RGB arrays [K, H, W, 3] (H = W = size), the format of a session's /images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, SessionError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def dead_leaves(n: int, size: int = 64, seed: int = 0, *, start: int = 0, n_leaves: int = 40,
                r_min: float = 0.05, r_max: float = 0.5, supersample: int = 2) -> np.ndarray:
    """Seeded colour dead-leaves images, uint8 [n, size, size, 3].

    r_min / r_max are disc radii as fractions of the image width; radii are drawn with density
    ~ r^-3 (scale invariance). Discs are painted back to front over a random background and the
    image is rendered at `supersample` x the size and box-filtered (anti-aliased edges). Image i
    depends only on (seed, i), so a longer set starts with the images of a shorter one; `start`
    returns images start .. start + n - 1 of the set (for generating it in batches).
    """
    n = int(n)
    size = int(size)
    if n < 0 or seed < 0 or start < 0:
        raise ConfigError(f"number of images, seed and start must be >= 0, got {n}, {seed}, {start}")
    if size < 4:
        raise ConfigError(f"image size must be at least 4 pixels, got {size}")
    if not 0 < r_min < r_max:
        raise ConfigError(f"dead leaves need 0 < r_min < r_max, got r_min={r_min}, r_max={r_max}")
    ss = max(1, int(supersample))
    hi = size * ss
    coords = (np.arange(hi, dtype=np.float32) + 0.5) / hi
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        rng = np.random.default_rng([int(seed), 0x5EAF, int(start) + i])
        # Inverse-CDF sampling of p(r) ~ r^-3 on [r_min, r_max].
        u = rng.random(n_leaves)
        r = (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5
        cx, cy = rng.random(n_leaves), rng.random(n_leaves)
        colours = _natural_colours(rng, n_leaves + 1)
        canvas = np.broadcast_to(colours[-1], (hi, hi, 3)).copy()
        top = np.full((hi, hi), -1, dtype=np.int32)
        for k in range(n_leaves):  # later discs occlude earlier ones; touch only the bounding box
            x0, x1 = _span(cx[k], r[k], hi)
            y0, y1 = _span(cy[k], r[k], hi)
            if x1 <= x0 or y1 <= y0:
                continue
            dx2 = (coords[x0:x1] - cx[k]) ** 2
            dy2 = (coords[y0:y1] - cy[k]) ** 2
            inside = (dy2[:, None] + dx2[None, :]) < r[k] ** 2
            top[y0:y1, x0:x1][inside] = k
        painted = top >= 0
        canvas[painted] = colours[top[painted]]
        img = canvas.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
        out[i] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return out


def _span(c: float, r: float, n: int) -> tuple[int, int]:
    """Pixel index range [lo, hi) that a disc at c with radius r (image-normalised) can touch."""
    return max(0, int(np.floor((c - r) * n))), min(n, int(np.ceil((c + r) * n)) + 1)


def _natural_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """n RGB colours in [0, 1] with natural-scene-like statistics: mostly muted, some vivid."""
    h = rng.random(n)
    s = 0.85 * rng.beta(1.6, 2.2, n)
    v = 0.08 + 0.88 * rng.beta(2.0, 1.8, n)
    return _hsv_to_rgb(h, s, v).astype(np.float32)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, axis=-1) for c in
                      ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(h.size)]


def list_image_files(folder: str | Path) -> list[Path]:
    """PNG/JPEG files directly inside folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SessionError(f"image folder {folder} does not exist or is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(folder: str | Path, size: int = 64, *, limit: int | None = None
                      ) -> tuple[np.ndarray, list[str]]:
    """The folder's PNG/JPEG images, centre-cropped square and resized: (uint8 [K, size, size, 3], names)."""
    files = list_image_files(folder)
    if not files:
        raise SessionError(f"image folder {folder} holds no images; expected files ending in "
                           f"{', '.join(IMAGE_SUFFIXES)} (case-insensitive)")
    if limit is not None:
        files = files[:int(limit)]
    out = np.empty((len(files), int(size), int(size), 3), dtype=np.uint8)
    for i, path in enumerate(files):
        out[i] = load_image(path, size)
    return out, [p.name for p in files]


def load_image(path: str | Path, size: int = 64) -> np.ndarray:
    """One image file as uint8 [size, size, 3]: centre-cropped to a square, resized (Lanczos)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return fit_image(np.asarray(im.convert("RGB")), size)
    except (UnidentifiedImageError, OSError) as e:
        raise SessionError(f"cannot read image {path}: {e}") from e


def fit_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB [h, w, 3] -> centre-cropped square, resized to [size, size, 3]."""
    from PIL import Image

    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side])
    if side == size:
        return crop
    return np.asarray(Image.fromarray(crop).resize((int(size), int(size)), Image.Resampling.LANCZOS))


def conform_images(images: np.ndarray, size: int) -> np.ndarray:
    """Validate uint8 [K, H, W, 3] and bring every image to size x size (crop + resize if needed)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise SessionError(f"images must be uint8 [K, H, W, 3], got {images.dtype} {images.shape}")
    if images.shape[0] == 0:
        raise SessionError("no images to show (an empty image array was given)")
    if images.shape[1] == images.shape[2] == size:
        return images
    return np.stack([fit_image(im, size) for im in images])
