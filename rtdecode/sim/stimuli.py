"""Stimuli for the virtual macaque: procedural colour images, crops of sample photographs, or the user's own.

Kinds (`STIMULUS_KINDS`, chosen by `make_stimuli`):
- "dead-leaves": occluding flat-coloured discs whose radii follow a power law (density ~ r^-3),
  which gives the 1/f amplitude spectrum of natural images (`dead_leaves`). Easy to decode.
- "naturalistic": procedural scenes with natural-image statistics and content (`naturalistic`):
  a colour background with a 1/f texture and an illumination gradient, then occluding objects
  (ellipses, polygons, bars at every orientation) each with its own 1/f texture, colour and shading.
- "photos": random crops of the natural photographs bundled with scikit-image (an optional extra:
  `pip install rtdecode[eval]`), with flips and small scale and colour jitter (`photo_crops`);
  every crop is tagged with its source photograph so that splits keep sources disjoint.
`load_image_folder` reads a folder of PNG/JPEG files, centre-cropped to a square and resized.

Images are uint8 RGB arrays [K, H, W, 3] (H = W = size), the format of a session's /images.
Procedural image i depends only on (seed, i), so `start` generates a long set in batches.
numpy + Pillow only (the runtime has no scipy).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, SessionError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
STIMULUS_KINDS = ("dead-leaves", "naturalistic", "photos")
# scikit-image sample images that are natural photographs (charts, text, logos and synthetic images
# are left out); the stereo pair is one source. All ship inside the scikit-image wheel.
PHOTO_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "camera", "moon", "coins",
                 "brick", "grass", "gravel", "hubble_deep_field", "retina", "immunohistochemistry")


@dataclass(frozen=True)
class StimulusSet:
    """Images with optional names and source groups (crops of one photograph share a group)."""

    images: np.ndarray  # uint8 [K, H, W, 3]
    names: list[str] | None = None
    groups: np.ndarray | None = None  # int64 [K] index into group_names
    group_names: list[str] | None = None

    @classmethod
    def concat(cls, parts: list[StimulusSet]) -> StimulusSet:
        """One set from consecutive batches of the same kind."""
        if not parts:
            raise ConfigError("no stimulus batches to join")
        first = parts[0]
        return cls(np.concatenate([p.images for p in parts]),
                   None if first.names is None else [n for p in parts for n in (p.names or [])],
                   None if first.groups is None else np.concatenate([p.groups for p in parts]),
                   first.group_names)


def make_stimuli(kind: str, n: int, size: int = 64, seed: int = 0, *, start: int = 0) -> StimulusSet:
    """Images start .. start + n - 1 of the seeded set of one kind (see STIMULUS_KINDS)."""
    if kind == "dead-leaves":
        return StimulusSet(dead_leaves(n, size, seed, start=start))
    if kind == "naturalistic":
        return StimulusSet(naturalistic(n, size, seed, start=start))
    if kind == "photos":
        images, groups = photo_crops(n, size, seed, start=start)
        names = [f"{PHOTO_SOURCES[int(g)]}#{start + i}" for i, g in enumerate(groups)]
        return StimulusSet(images, names, groups, list(PHOTO_SOURCES))
    raise ConfigError(f"stimulus kind {kind!r} is unknown; expected one of {', '.join(STIMULUS_KINDS)}")


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


def naturalistic(n: int, size: int = 64, seed: int = 0, *, start: int = 0, supersample: int = 2) -> np.ndarray:
    """Seeded procedural natural scenes, uint8 [n, size, size, 3] (see `naturalistic_layers`).

    Image i depends only on (seed, i); `start` returns images start .. start + n - 1.
    """
    n, size = int(n), int(size)
    if n < 0 or seed < 0 or start < 0:
        raise ConfigError(f"number of images, seed and start must be >= 0, got {n}, {seed}, {start}")
    if size < 4:
        raise ConfigError(f"image size must be at least 4 pixels, got {size}")
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = naturalistic_layers(seed, start + i, size, supersample=supersample)["image"]
    return out


def naturalistic_layers(seed: int, index: int, size: int = 64, *, supersample: int = 2,
                        n_objects: tuple[int, int] = (4, 10), r_min: float = 0.08, r_max: float = 0.55
                        ) -> dict[str, np.ndarray]:
    """One naturalistic scene and how it was built.

    Background: two regions split by a straight boundary at a random orientation (e.g. ground and
    sky, a wall and a floor), each a base colour modulated by a 1/f luminance texture and weaker 1/f
    colour-opponent textures, under a linear illumination gradient. Objects, painted back to front:
    ellipses, star-shaped polygons and elongated bars at random orientations (edges at every
    orientation), sizes drawn with density ~ r^-2 between r_min and r_max (fractions of the width),
    each with its own base colour, 1/f texture (spectral slope 0.7-1.5) and shading (a lit and a
    shadowed side; ellipses are shaded like a sphere). Rendered at `supersample` x the size and
    box-filtered.

    Returns 'image' uint8 [size, size, 3], 'labels' int32 [S, S] at the rendering resolution S (index
    of the top object at each point, -1 background), 'full_area' and 'visible_area' per object (in
    rendering pixels; visible < full where an object is occluded).
    """
    ss = max(1, int(supersample))
    hi = int(size) * ss
    rng = np.random.default_rng([int(seed), 0x4A7, int(index)])
    y, x = (np.mgrid[0:hi, 0:hi].astype(np.float32) + 0.5) / hi
    canvas = _textured_surface(rng, hi, _natural_colours(rng, 1)[0], x, y, slope=rng.uniform(0.9, 1.4),
                               contrast=rng.uniform(0.15, 0.45))
    theta, offset = rng.uniform(0, 2 * np.pi), rng.uniform(-0.35, 0.35)
    side = (x - 0.5) * np.cos(theta) + (y - 0.5) * np.sin(theta) > offset
    other = _textured_surface(rng, hi, _natural_colours(rng, 1)[0], x, y, slope=rng.uniform(0.9, 1.4),
                              contrast=rng.uniform(0.15, 0.45))
    canvas[side] = other[side]
    k = int(rng.integers(n_objects[0], n_objects[1] + 1))
    u = rng.random(k)
    radii = 1.0 / (1.0 / r_min - u * (1.0 / r_min - 1.0 / r_max))  # inverse CDF of p(r) ~ r^-2
    labels = np.full((hi, hi), -1, dtype=np.int32)
    full = np.zeros(k, dtype=np.int64)
    for j in range(k):
        mask, shade = _object_mask(rng, radii[j], x, y)
        full[j] = int(mask.sum())
        if not full[j]:
            continue
        surface = _textured_surface(rng, hi, _natural_colours(rng, 1)[0], x, y, slope=rng.uniform(0.7, 1.5),
                                    contrast=rng.uniform(0.15, 0.55), shade=shade)
        canvas[mask] = surface[mask]
        labels[mask] = j
    visible = np.bincount(labels[labels >= 0].ravel(), minlength=k)[:k]
    img = canvas.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    return {"image": np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8), "labels": labels,
            "full_area": full, "visible_area": visible.astype(np.int64)}


def pink_noise(rng: np.random.Generator, n: int, slope: float = 1.0) -> np.ndarray:
    """A seeded n x n field whose amplitude spectrum falls as 1/f^slope; zero mean, unit sd (float32)."""
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = np.inf  # no DC
    spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) * f ** -float(slope)
    field = np.fft.irfft2(spec, s=(n, n))
    sd = field.std()
    return ((field - field.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32)


# colour-opponent directions: red-green and blue-yellow (unit length)
_RG = np.array([0.71, -0.71, 0.0], dtype=np.float32)
_BY = np.array([-0.41, -0.41, 0.82], dtype=np.float32)


def _textured_surface(rng: np.random.Generator, hi: int, colour: np.ndarray, x: np.ndarray, y: np.ndarray, *,
                      slope: float, contrast: float, shade: np.ndarray | None = None) -> np.ndarray:
    """Colour [hi, hi, 3] in [0, 1]: base colour x (1 + 1/f luminance texture) + 1/f chroma, times shading."""
    lum = pink_noise(rng, hi, slope)
    rg = pink_noise(rng, hi, slope)
    by = pink_noise(rng, hi, slope)
    theta = rng.uniform(0, 2 * np.pi)  # illumination direction and strength
    ramp = 1.0 + rng.uniform(0.1, 0.5) * ((x - 0.5) * np.cos(theta) + (y - 0.5) * np.sin(theta))
    light = ramp if shade is None else ramp * shade
    surf = colour[None, None, :] * (1.0 + contrast * lum)[..., None]
    surf += 0.06 * contrast * (rg[..., None] * _RG + by[..., None] * _BY)
    surf *= light[..., None]
    return np.clip(surf, 0.0, 1.0)


def _object_mask(rng: np.random.Generator, r: float, x: np.ndarray, y: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """(bool mask, shading or None) of one random ellipse, polygon or bar of size ~r at a random place."""
    cx, cy = rng.uniform(-0.05, 1.05, 2)
    phi = rng.uniform(0, np.pi)
    dx, dy = x - cx, y - cy
    u = dx * np.cos(phi) + dy * np.sin(phi)  # object-aligned coordinates
    v = -dx * np.sin(phi) + dy * np.cos(phi)
    kind = rng.choice(3, p=[0.4, 0.4, 0.2])
    if kind == 0:  # ellipse, shaded like a lit sphere (brighter towards the light, darker at the rim)
        a, b = r, r * rng.uniform(0.35, 1.0)
        q = (u / a) ** 2 + (v / b) ** 2
        mask = q < 1.0
        lx, ly = np.cos(rng.uniform(0, 2 * np.pi)), np.sin(rng.uniform(0, 2 * np.pi))
        nz = np.sqrt(np.clip(1.0 - q, 0.0, 1.0))
        shade = 0.55 + 0.45 * np.clip(0.6 * nz + 0.4 * ((u / a) * lx + (v / b) * ly), -1.0, 1.0)
        return mask, shade
    if kind == 1:  # star-shaped polygon: 3-9 vertices at random angles and radii around the centre
        m = int(rng.integers(3, 10))
        ang = np.sort(rng.uniform(0, 2 * np.pi, m))
        rad = r * rng.uniform(0.5, 1.0, m)
        return _inside_polygon(u, v, rad * np.cos(ang), rad * np.sin(ang)), None
    length, width = r * rng.uniform(1.0, 2.0), r * rng.uniform(0.06, 0.25)  # bar / branch
    return (np.abs(u) < length) & (np.abs(v) < width), None


def _inside_polygon(px: np.ndarray, py: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd rule: which points (px, py) lie inside the polygon with vertices (vx, vy)."""
    inside = np.zeros(px.shape, dtype=bool)
    for i in range(vx.size):
        x0, y0, x1, y1 = vx[i - 1], vy[i - 1], vx[i], vy[i]
        if y0 == y1:
            continue
        crosses = (py < y0) != (py < y1)
        xcross = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < xcross)
    return inside


# ---- crops of sample photographs (scikit-image, optional) ------------------------------------
@functools.lru_cache(maxsize=1)
def photo_sources() -> tuple[np.ndarray, ...]:
    """The PHOTO_SOURCES photographs as uint8 RGB arrays (loaded once from scikit-image's sample data)."""
    try:
        from skimage import data
    except ImportError as e:
        raise ConfigError("the 'photos' stimuli are crops of scikit-image's sample photographs; install the "
                          "optional extra: pip install rtdecode[eval] (or pip install scikit-image)") from e
    out = []
    for name in PHOTO_SOURCES:
        try:
            img = getattr(data, name)()
        except Exception as e:  # a scikit-image without this image, or one that would download it
            raise ConfigError(f"scikit-image sample image {name!r} is not available offline ({type(e).__name__}: "
                              f"{e}); install scikit-image>=0.22 from a full wheel") from e
        if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity); the left view
            img = img[0]
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    return tuple(out)


def photo_crops(n: int, size: int = 64, seed: int = 0, *, start: int = 0, min_scale: float = 0.3,
                max_scale: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random crops of the sample photographs -> (uint8 [n, size, size, 3], source index int64 [n]).

    Crop i (depending only on (seed, i)): a source drawn uniformly from PHOTO_SOURCES, a square of
    min_scale..max_scale of the photograph's shorter side at a random place, flipped left-right
    with probability 1/2, resized (Lanczos), then brightness, contrast and saturation each scaled
    by 0.85..1.15 (small colour jitter).
    """
    from PIL import Image

    n, size = int(n), int(size)
    if n < 0 or seed < 0 or start < 0:
        raise ConfigError(f"number of images, seed and start must be >= 0, got {n}, {seed}, {start}")
    if not 0 < min_scale <= max_scale <= 1:
        raise ConfigError(f"crop scales must satisfy 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
    photos = photo_sources()
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    groups = np.empty(n, dtype=np.int64)
    for i in range(n):
        rng = np.random.default_rng([int(seed), 0x9407, int(start) + i])
        g = int(rng.integers(len(photos)))
        photo = photos[g]
        h, w = photo.shape[:2]
        side = max(size // 2, int(round(min(h, w) * rng.uniform(min_scale, max_scale))))
        side = min(side, h, w)
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = photo[y0:y0 + side, x0:x0 + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        im = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.Resampling.LANCZOS),
                        dtype=np.float32) / 255.0
        bright, contrast, sat = rng.uniform(0.85, 1.15, 3)
        grey = im.mean(axis=2, keepdims=True)
        im = grey + sat * (im - grey)
        im = im.mean() + contrast * (im - im.mean())
        images[i] = np.clip(np.rint(im * bright * 255.0), 0, 255).astype(np.uint8)
        groups[i] = g
    return images, groups


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
