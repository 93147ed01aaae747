"""Frames of a recording directory (`rtdecode record`, `serve --record`) written out as an
animated GIF or one PNG per frame, optionally beside their phosphene rendering."""

from __future__ import annotations

from pathlib import Path


def export_frames(rec, path: str | Path, *, start: int = 0, stop: int | None = None, step: int = 1,
                  fps: float = 20.0, phosphene: bool = False, n_phosphenes: int = 1024) -> dict:
    """Write frames start:stop:step of `rec` (sinks.recorder.open_recording_dir) as a GIF (path
    ends in .gif) or PNGs named frame-<seq>.png in a directory; returns {"path", "frames"}."""
    from PIL import Image

    from ..errors import ConfigError
    from ..protocol import to_uint8

    renderer = None
    if phosphene:
        from .phosphene import PhospheneRenderer

        first = rec.chunks[0].shape if rec.chunks else (256, 256, 3)
        renderer = PhospheneRenderer(n_phosphenes=n_phosphenes, size=(max(first[0], 128), max(first[1], 128)))

    def panel(img):
        img = to_uint8(img)
        return renderer.side_by_side(img) if renderer is not None else img

    target = Path(path)
    n = 0
    if target.suffix.lower() == ".gif":
        images = [Image.fromarray(panel(im)) for _, im in rec.iter_frames(start, stop, step)]
        if not images:
            raise ConfigError(f"no frames to export from {rec.directory} (start={start}, stop={stop})")
        target.parent.mkdir(parents=True, exist_ok=True)
        images[0].save(target, save_all=True, append_images=images[1:], duration=max(1, int(1000 / fps)), loop=0)
        n = len(images)
    elif target.suffix == "" or target.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for h, im in rec.iter_frames(start, stop, step):
            Image.fromarray(panel(im)).save(target / f"frame-{int(h['seq']):08d}.png")
            n += 1
    else:
        raise ConfigError(f"--export must end in .gif or name a directory (for PNGs), got {path!r}")
    return {"path": str(target), "frames": n}
