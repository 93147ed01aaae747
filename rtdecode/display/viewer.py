"""See what the decoder publishes: stimulus | reconstruction | phosphenes, with a latency readout.

The stimulus on screen comes from rtdecode.sources.markers (StimulusTracker, LslMarkerFeed).

Pieces, each usable alone:
  PanelComposer     one uint8 panel per frame: tiles upscaled to a visible size, labels, latency
  AnimationWriter   headless output: animated GIF (Pillow), PNG sequence, or MP4 (imageio + ffmpeg)
  PygameWindow      an on-screen window (pygame, optional)
  view(...)         the loop: FrameSubscriber -> panel -> sink, until a duration / frame count / stop

The loop keeps only the newest frame (FrameSubscriber.recv_newest, the recipe in
docs/protocol.md): after a stall of the viewer it shows the present, not the frames queued
meanwhile. When frames stop, the server's heartbeat says why (stream lost, idle, stopping, or
no heartbeat: dead); each change is drawn over the last frame.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..protocol import to_uint8 as quantise

log = logging.getLogger(__name__)

FORMATS = ("gif", "png", "mp4")
MODES = ("frame", "phosphene")


def upscale(image: np.ndarray, size: int, *, smooth: bool = False) -> np.ndarray:
    """Resize an HxWx3 image (uint8, or float in [0, 1]) so its longer side is `size` pixels."""
    from PIL import Image

    img = to_uint8(image)
    h, w = img.shape[:2]
    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if new == (w, h):
        return img
    resample = Image.BILINEAR if smooth else Image.NEAREST
    return np.asarray(Image.fromarray(img).resize(new, resample))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image (uint8, or float in [0, 1]; H x W x 3 or H x W grey) as uint8 H x W x 3 (protocol.to_uint8)."""
    a = quantise(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return a


class PanelComposer:
    """Tiles side by side (stimulus when known, reconstruction, phosphenes in phosphene mode) on a
    dark background, each labelled, with a readout line: latency, sequence number, stimulus."""

    def __init__(self, *, tile: int = 192, mode: str = "frame", images: np.ndarray | None = None,
                 show_stimulus: bool | None = None, smooth: bool = False, phosphene_opts: dict | None = None):
        if mode not in MODES:
            raise ConfigError(f"view mode must be one of {MODES}, got {mode!r}")
        if tile < 16:
            raise ConfigError(f"tile size must be >= 16 pixels, got {tile}")
        self.tile = int(tile)
        self.mode = mode
        self.images = images
        self.show_stimulus = images is not None if show_stimulus is None else show_stimulus
        self.smooth = smooth
        self.phosphene = None
        if mode == "phosphene":
            from .phosphene import PhospheneRenderer

            self.phosphene = PhospheneRenderer(size=(self.tile, self.tile), **(phosphene_opts or {}))
        self.gap = 6
        self.text_h = 34
        self.font = _font(13)
        self.small_font = _font(11)

    @property
    def n_tiles(self) -> int:
        return 1 + int(self.show_stimulus) + int(self.phosphene is not None)

    @property
    def shape(self) -> tuple[int, int, int]:
        n = self.n_tiles
        return (self.text_h + self.tile + self.gap + 14, n * self.tile + (n + 1) * self.gap, 3)

    def compose(self, recon: np.ndarray, *, stimulus: int | None = None, latency_ms: float | None = None,
                seq: int | None = None, extra: str = "") -> np.ndarray:
        from PIL import Image, ImageDraw

        h, w, _ = self.shape
        canvas = np.full((h, w, 3), 24, dtype=np.uint8)
        tiles: list[tuple[str, np.ndarray | None]] = []
        if self.show_stimulus:
            img = None
            if stimulus is not None and self.images is not None and 0 <= stimulus < len(self.images):
                img = self.images[stimulus]
            tiles.append(("stimulus" + (f" #{stimulus}" if stimulus is not None else ""), img))
        tiles.append(("reconstruction", recon))
        if self.phosphene is not None:
            tiles.append(("phosphenes", self.phosphene.render(recon)))
        y0 = self.text_h
        for k, (_, img) in enumerate(tiles):
            x0 = self.gap + k * (self.tile + self.gap)
            if img is None:
                canvas[y0:y0 + self.tile, x0:x0 + self.tile] = 48
                continue
            up = upscale(img, self.tile, smooth=self.smooth)
            th, tw = up.shape[:2]
            oy, ox = y0 + (self.tile - th) // 2, x0 + (self.tile - tw) // 2
            canvas[oy:oy + th, ox:ox + tw] = up[:, :, :3]
        pil = Image.fromarray(canvas)
        draw = ImageDraw.Draw(pil)
        for k, (label, _) in enumerate(tiles):
            draw.text((self.gap + k * (self.tile + self.gap), y0 + self.tile + 1), label, fill=(200, 200, 200),
                      font=self.small_font)
        parts = []
        if latency_ms is not None:
            parts.append(f"latency {latency_ms:6.1f} ms")
        if seq is not None:
            parts.append(f"frame {seq}")
        draw.text((self.gap, 2), "   ".join(parts), fill=(255, 220, 120), font=self.font)
        if extra:
            draw.text((self.gap, 18), extra, fill=(190, 190, 190), font=self.small_font)
        return np.asarray(pil)


def _font(size: int):
    """Pillow's bundled scalable font (Pillow >= 10.1), else its small bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


class AnimationWriter:
    """Headless sink: GIF (kept in memory, written at close), PNG sequence (written as it goes) or
    MP4 (imageio with ffmpeg). `max_frames` caps what a GIF holds in memory."""

    def __init__(self, out_dir: str | Path, fmt: str = "gif", *, fps: float = 20.0, name: str = "view",
                 max_frames: int = 3000):
        if fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {FORMATS}, got {fmt!r}")
        if not fps > 0:
            raise ConfigError(f"animation fps must be > 0, got {fps!r}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.fmt, self.fps, self.name, self.max_frames = fmt, float(fps), name, int(max_frames)
        self.frames: list[np.ndarray] = []
        self.count = 0
        self.dropped = 0
        self._mp4 = None
        if fmt == "mp4":
            try:
                import imageio.v2 as iio

                self._mp4 = iio.get_writer(self.out_dir / f"{name}.mp4", fps=self.fps, macro_block_size=1)
            except Exception as e:
                raise ConfigError(f"MP4 output needs imageio with ffmpeg (pip install imageio-ffmpeg); "
                                  f"use --format gif or png instead ({e})") from e

    @property
    def path(self) -> Path:
        return self.out_dir / (f"{self.name}.{self.fmt}" if self.fmt != "png" else f"{self.name}_00000.png")

    def write(self, panel: np.ndarray) -> None:
        if self.fmt == "png":
            from PIL import Image

            Image.fromarray(panel).save(self.out_dir / f"{self.name}_{self.count:05d}.png")
        elif self.fmt == "mp4":
            self._mp4.append_data(panel)
        elif len(self.frames) < self.max_frames:
            self.frames.append(panel)
        else:
            self.dropped += 1
            return
        self.count += 1

    def close(self) -> Path | None:
        if self.fmt == "mp4" and self._mp4 is not None:
            self._mp4.close()
            self._mp4 = None
        if self.fmt == "gif" and self.frames:
            from PIL import Image

            ims = [Image.fromarray(f) for f in self.frames]
            ims[0].save(self.path, save_all=True, append_images=ims[1:], duration=int(round(1000 / self.fps)),
                        loop=0, optimize=False, disposal=1)
            self.frames = []
        if self.dropped:
            log.warning("animation kept its first %d frames; %d later ones were not stored", self.count, self.dropped)
        return self.path if self.count else None


class PygameWindow:
    """On-screen display of panels; closing the window or pressing Esc/q stops the viewer."""

    def __init__(self, shape: tuple[int, int, int], title: str = "rtdecode view"):
        try:
            import pygame
        except ImportError as e:
            raise ConfigError("no window backend: install pygame (pip install pygame) to see frames in a window, "
                              "or use --headless --out DIR to write an animation instead") from e
        self.pg = pygame
        pygame.init()
        self.screen = pygame.display.set_mode((shape[1], shape[0]))
        pygame.display.set_caption(title)
        self.closed = False

    def write(self, panel: np.ndarray) -> None:
        pg = self.pg
        for ev in pg.event.get():
            if ev.type == pg.QUIT or (ev.type == pg.KEYDOWN and ev.key in (pg.K_ESCAPE, pg.K_q)):
                self.closed = True
        surf = pg.surfarray.make_surface(np.ascontiguousarray(panel.swapaxes(0, 1)))
        self.screen.blit(surf, (0, 0))
        pg.display.flip()

    def close(self) -> None:
        self.pg.quit()
        return None


@dataclass
class ViewStats:
    """What a view() run saw; latencies in seconds (receipt - newest sample's LSL timestamp)."""

    frames: int = 0
    shown: int = 0
    seq_gaps: int = 0  # frames that did not arrive, or were passed over (`passed_over` of them)
    passed_over: int = 0  # queued frames skipped for a newer one (the viewer had fallen behind)
    server_states: list[str] = field(default_factory=list)  # heartbeat states seen, in order of change
    latencies: list[float] = field(default_factory=list)
    stimuli_known: int = 0
    output: str | None = None
    stopped_by: str = "end"

    def latency_ms(self) -> dict[str, float]:
        if not self.latencies:
            return {}
        a = np.asarray(self.latencies) * 1e3
        return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
                "p99": float(np.percentile(a, 99)), "max": float(a.max()), "mean": float(a.mean())}

    def summary(self) -> str:
        lat = self.latency_ms()
        lat_txt = (f"latency p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, "
                   f"max {lat['max']:.1f} ms") if lat else "no latency figures"
        return (f"{self.frames} frames received ({self.seq_gaps} lost in transit or passed over, "
                f"{self.passed_over} of them passed over for newer ones), {self.shown} shown; "
                f"{lat_txt}" + (f"; wrote {self.output}" if self.output else ""))


def view(address: str, sink: Any, composer: PanelComposer, *, duration: float | None = None,
         frames: int | None = None, stimulus_at: Any = None, stop_event: threading.Event | None = None,
         max_fps: float = 0.0, first_frame_timeout: float | None = None, subscriber: Any = None,
         on_frame: Any = None) -> ViewStats:
    """Receive frames from `address` and hand a composed panel per frame to `sink.write`.

    Stops after `duration` seconds, `frames` frames, on `stop_event`, when the sink's window is
    closed, or when no first frame came within `first_frame_timeout` seconds. `stimulus_at(ts)`
    gives the image on screen at an LSL time when the header does not say (markers).
    `max_fps` > 0 shows at most that many panels per second (the rest are counted, not drawn).
    `on_frame(received)` is called for every frame (e.g. to collect figures).
    """
    from ..protocol import FrameSubscriber

    own = subscriber is None
    sub = subscriber or FrameSubscriber(address, rcvhwm=4)  # the recipe: a few frames queued at most
    stats = ViewStats()
    start = time.monotonic()
    last_shown = -1e9
    last_seq = None
    last_frame: tuple[np.ndarray, int | None, int, str] | None = None  # image, stimulus, seq, extra
    state_shown = "streaming"
    try:
        while True:
            now = time.monotonic()
            if duration is not None and now - start >= duration:
                stats.stopped_by = "duration"
                break
            if frames is not None and stats.frames >= frames:
                stats.stopped_by = "frames"
                break
            if stop_event is not None and stop_event.is_set():
                stats.stopped_by = "stop_event"
                break
            if getattr(sink, "closed", False):
                stats.stopped_by = "window closed"
                break
            if (first_frame_timeout is not None and stats.frames == 0
                    and now - start >= first_frame_timeout):
                stats.stopped_by = "no frames"
                break
            f = sub.recv_newest(timeout=0.1)
            state = sub.state() if hasattr(sub, "state") else "unknown"
            if not stats.server_states or state != stats.server_states[-1]:
                stats.server_states.append(state)
            if f is None:
                if state not in ("streaming", "unknown") and state != state_shown and last_frame is not None:
                    state_shown = state  # draw the change over the last frame, once
                    img, stim, seq, extra = last_frame
                    sink.write(composer.compose(img, stimulus=stim, seq=seq,
                                                extra=f"server: {state.replace('_', ' ')}" + (f"; {extra}" if extra else "")))
                continue
            state_shown = "streaming"
            stats.passed_over = getattr(sub, "discarded", 0)
            stats.frames += 1
            h = f.header
            if last_seq is not None and h.seq > last_seq + 1:
                stats.seq_gaps += h.seq - last_seq - 1
            last_seq = h.seq
            lat = f.latency_s
            stats.latencies.append(lat)
            if on_frame is not None:
                on_frame(f)
            if max_fps > 0 and f.received - last_shown < 1.0 / max_fps:
                continue
            last_shown = f.received
            stim = h.stimulus
            if stim is None and stimulus_at is not None:
                stim = stimulus_at(h.ref_time)
            if stim is not None:
                stats.stimuli_known += 1
            panel = composer.compose(f.image, stimulus=stim, latency_ms=lat * 1e3, seq=h.seq,
                                     extra=", ".join(h.flags))
            last_frame = (f.image, stim, h.seq, ", ".join(h.flags))
            sink.write(panel)
            stats.shown += 1
    except KeyboardInterrupt:
        stats.stopped_by = "interrupt"
    finally:
        if own:
            sub.close()
        out = sink.close()
        stats.output = None if out is None else str(out)
    return stats
