"""Crash-safe recording of published frames: one small HDF5 file per chunk, renamed into place.

Layout of a recording directory:
  recording.json          manifest (format, version, created, source, options), written atomically
  chunk-000000.h5         frames 0..n-1 of the recording, complete and closed
  chunk-000001.h5         ...
  .chunk-000002.h5.tmp    (only while a chunk is being written, or after a crash: ignored)

Why chunk files: HDF5 keeps metadata in memory and a process killed mid-write (SIGKILL, power loss)
can leave a file whose superblock or B-trees are inconsistent, i.e. unreadable as a whole. Here a
chunk is written completely under a temporary name, closed, fsync'ed and only then renamed with
os.replace (atomic on POSIX) to its final name; the directory is fsync'ed too. A kill can therefore
only lose the chunk being written; every chunk with a final name is a closed, complete file.

Each chunk file holds:
  frames     uint8 or float32 [N, H, W, 3]   (one shape per chunk; a new shape starts a new chunk)
  seq, skipped, stimulus (-1 = none)          int64 [N]
  ref_time, newest_ts, received               float64 [N]  (LSL / monotonic seconds)
  headers    [N] UTF-8 JSON, the full frame header as published
  telemetry  [M] UTF-8 JSON records (recorder state per chunk, plus anything passed to write_telemetry)
  attrs      format, version, chunk, first_seq, last_seq, n_frames, created (unix time)

`FrameRecorder.write(header, image)` is cheap and never blocks: it copies the image into a bounded
queue and returns; a writer thread builds and flushes chunks (every `chunk_frames` frames or
`chunk_seconds` seconds, whichever comes first). When the queue is full the frame is dropped and
counted. A failed writer thread (disk full, directory gone) follows rtdecode.threads: its error is
stored with context and logged once, the next write() raises it and close() raises SessionError.
`open_recording_dir(path)` reads a directory back.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, SessionError
from ..protocol import FrameHeader
from ..threads import GuardedWorker, ThreadGuard

log = logging.getLogger(__name__)

FORMAT = "rtdecode-frame-recording"
FORMAT_VERSION = 1
MANIFEST = "recording.json"
CHUNK_RE = re.compile(r"^chunk-(\d{6,})\.h5$")
_STOP = object()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@dataclass
class _Item:
    header: FrameHeader
    image: np.ndarray
    received: float


@dataclass(frozen=True)
class ChunkInfo:
    """One complete chunk file of a recording."""

    index: int
    path: Path
    n_frames: int
    first_seq: int
    last_seq: int
    shape: tuple[int, ...]
    dtype: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "file": self.path.name, "frames": self.n_frames,
                "first_seq": self.first_seq, "last_seq": self.last_seq,
                "shape": list(self.shape), "dtype": self.dtype}


class FrameRecorder(GuardedWorker):
    """Records frames + headers + telemetry into a directory of atomically renamed HDF5 chunks.

    A Sink (rtdecode.sinks): write, write_telemetry, close.
    Thread-safety: `write` and `write_telemetry` may be called from one producer thread (the
    decoder loop) while the writer thread flushes; `close` from the same producer thread.
    `on_chunk(info: ChunkInfo)` is called from the writer thread after each chunk is in place.
    """

    def __init__(self, directory: str | os.PathLike, *, chunk_frames: int = 100, chunk_seconds: float = 1.0,
                 queue_size: int = 512, compression: str | None = None, source: str | None = None,
                 meta: dict | None = None, on_chunk: Callable[[ChunkInfo], None] | None = None):
        if int(chunk_frames) < 1:
            raise ConfigError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if not float(chunk_seconds) > 0:
            raise ConfigError(f"chunk_seconds must be > 0, got {chunk_seconds}")
        if int(queue_size) < 1:
            raise ConfigError(f"queue_size must be >= 1, got {queue_size}")
        if compression not in (None, "gzip", "lzf"):
            raise ConfigError(f"compression must be None, 'gzip' or 'lzf', got {compression!r}")
        import h5py  # noqa: F401  (fail at start-up, not in the writer thread)

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = [p for p in self.directory.iterdir() if CHUNK_RE.match(p.name)]
        if existing:
            raise ConfigError(f"recording directory {self.directory} already holds {len(existing)} chunk(s); "
                              "choose an empty or new directory")
        self.chunk_frames = int(chunk_frames)
        self.chunk_seconds = float(chunk_seconds)
        self.compression = compression
        self.on_chunk = on_chunk
        self.received = 0  # frames offered to write()
        self.dropped = 0  # frames refused because the queue was full
        self.written = 0  # frames in complete chunk files
        self.chunks: list[ChunkInfo] = []
        self._guard = ThreadGuard("rtdecode-recorder", doing=f"waiting for frames to record in {self.directory}")
        self._queue: queue.Queue = queue.Queue(maxsize=int(queue_size))
        self._telemetry: list[dict] = []
        self._tele_lock = threading.Lock()
        self._closed = False
        _write_json_atomic(self.directory / MANIFEST, {
            "format": FORMAT, "version": FORMAT_VERSION, "created": time.time(), "source": source,
            "chunk_frames": self.chunk_frames, "chunk_seconds": self.chunk_seconds,
            "compression": compression, "meta": meta or {}})
        self._thread = threading.Thread(target=self._run, name="rtdecode-recorder", daemon=True)
        self._thread.start()

    # ---- producer side (hot path) --------------------------------------------------------
    def write(self, header: FrameHeader, image: np.ndarray, received: float | None = None) -> None:
        """Queue one frame (copied); never blocks. `received`: monotonic time of arrival (default: now).

        Raises the writer thread's error once it has failed (nothing more would be written).
        """
        if self._closed:
            raise ConfigError("FrameRecorder.write() after close()")
        self._guard.raise_if_failed()
        self.received += 1
        try:
            self._queue.put_nowait(_Item(header, np.array(image, copy=True),
                                         time.monotonic() if received is None else float(received)))
        except queue.Full:
            self.dropped += 1

    def write_telemetry(self, record: dict) -> None:
        """Attach a JSON-serialisable record to the chunk being built."""
        with self._tele_lock:
            self._telemetry.append(dict(record))

    def close(self, timeout: float = 30.0) -> None:
        """Flush what is queued into a last chunk and stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        while True:  # the queue may be full; the writer drains it
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() > deadline or not self._thread.is_alive():
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("recorder writer did not finish within %.1f s; %d frames may be lost",
                        timeout, self._queue.qsize())
        if self.failure is not None:
            raise SessionError(f"recording to {self.directory} failed: {self.failure}") from self.error

    def __enter__(self) -> FrameRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        return {"received": self.received, "written": self.written, "dropped": self.dropped,
                "chunks": len(self.chunks), "queued": self._queue.qsize()}

    # ---- writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        with self._guard:  # an error is stored with context and logged once; write()/close() raise it
            self._write_chunks()

    def _write_chunks(self) -> None:
        pending: list[_Item] = []
        started = time.monotonic()
        while True:
            wait = max(0.0, started + self.chunk_seconds - time.monotonic()) if pending else 0.5
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if item is not None:
                if pending and (item.image.shape != pending[0].image.shape
                                or item.image.dtype != pending[0].image.dtype):
                    self._flush(pending)
                    pending = []
                if not pending:
                    started = time.monotonic()
                pending.append(item)
            if pending and (len(pending) >= self.chunk_frames
                            or time.monotonic() - started >= self.chunk_seconds):
                self._flush(pending)
                pending = []
        while True:  # anything queued after the stop marker (should be none)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                pending.append(item)
        if pending:
            self._flush(pending)

    def _flush(self, items: list[_Item]) -> None:
        import h5py

        index = len(self.chunks)
        final = self.directory / f"chunk-{index:06d}.h5"
        tmp = self.directory / f".{final.name}.tmp"
        self._guard.doing = f"writing chunk {index} ({len(items)} frames) to {final}"
        t0 = time.monotonic()
        with self._tele_lock:
            tele, self._telemetry = self._telemetry, []
        tele.append({"kind": "recorder", "time": time.monotonic(), "chunk": index, "frames": len(items),
                     "received": self.received, "dropped": self.dropped, "queued": self._queue.qsize()})
        n = len(items)
        shape = items[0].image.shape
        strs = h5py.string_dtype("utf-8")
        with h5py.File(tmp, "w", libver="latest") as f:
            f.create_dataset("frames", data=np.stack([it.image for it in items]),
                             chunks=(1, *shape) if self.compression else None, compression=self.compression)
            hs = [it.header for it in items]
            f["seq"] = np.array([h.seq for h in hs], dtype=np.int64)
            f["skipped"] = np.array([h.skipped for h in hs], dtype=np.int64)
            f["stimulus"] = np.array([-1 if h.stimulus is None else int(h.stimulus) for h in hs], dtype=np.int64)
            f["ref_time"] = np.array([h.ref_time for h in hs], dtype=np.float64)
            f["newest_ts"] = np.array([h.newest_ts for h in hs], dtype=np.float64)
            f["received"] = np.array([it.received for it in items], dtype=np.float64)
            f.create_dataset("headers", data=[h.to_bytes().decode() for h in hs], dtype=strs)
            f.create_dataset("telemetry", data=[json.dumps(t, default=str) for t in tele], dtype=strs)
            f.attrs.update({"format": FORMAT, "version": FORMAT_VERSION, "chunk": index,
                            "first_seq": hs[0].seq, "last_seq": hs[-1].seq, "n_frames": n,
                            "created": time.time()})
            f.flush()
        with open(tmp, "rb+") as fh:  # data on disk before the name says the chunk is complete
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        info = ChunkInfo(index, final, n, hs[0].seq, hs[-1].seq, tuple(shape), str(items[0].image.dtype))
        self.chunks.append(info)
        self.written += n
        log.debug("chunk %d: %d frames (seq %d..%d) in %.1f ms", index, n, info.first_seq, info.last_seq,
                  (time.monotonic() - t0) * 1e3)
        if self.on_chunk is not None:
            self._guard.doing = f"reporting chunk {index} to on_chunk"
            self.on_chunk(info)
        self._guard.doing = f"waiting for frames to record in {self.directory}"


# ---- reading ------------------------------------------------------------------------------
def _percentiles(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"n": 0}
    ms = x * 1e3
    return {"n": int(x.size), "mean_ms": float(ms.mean()), "median_ms": float(np.median(ms)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "min_ms": float(ms.min())}


class FrameRecordingReader:
    """Reads a recording directory: complete chunks only (temp files of a killed writer are ignored).

    Chunks that cannot be opened are listed in `bad_chunks` (with the reason) and skipped.
    """

    def __init__(self, directory: str | os.PathLike):
        import h5py

        self._h5py = h5py
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise SessionError(f"{self.directory} is not a directory (expected an rtdecode frame recording)")
        manifest = self.directory / MANIFEST
        self.manifest: dict[str, Any] = {}
        if manifest.exists():
            self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
            if self.manifest.get("format") != FORMAT:
                raise SessionError(f"{manifest}: format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        files = sorted((int(m.group(1)), p) for p in self.directory.iterdir() if (m := CHUNK_RE.match(p.name)))
        if not files and not manifest.exists():
            raise SessionError(f"{self.directory} holds no {MANIFEST} and no chunk-*.h5 files "
                               "(expected a directory written by `rtdecode record` or `serve --record`)")
        self.chunks: list[ChunkInfo] = []
        self.bad_chunks: list[tuple[str, str]] = []
        for index, path in files:
            try:
                with h5py.File(path, "r") as f:
                    if f.attrs.get("format") != FORMAT:
                        raise SessionError(f"format {f.attrs.get('format')!r}")
                    fr = f["frames"]
                    seq = f["seq"][()]
                    if len(seq) != fr.shape[0] or fr.shape[0] == 0:
                        raise SessionError(f"{len(seq)} seq values for {fr.shape[0]} frames")
                    self.chunks.append(ChunkInfo(index, path, int(fr.shape[0]), int(seq[0]), int(seq[-1]),
                                                 tuple(fr.shape[1:]), str(fr.dtype)))
            except (OSError, KeyError, SessionError) as e:
                self.bad_chunks.append((path.name, str(e)))
                log.warning("skipping unreadable chunk %s: %s", path, e)
        self.temp_files = sorted(p.name for p in self.directory.iterdir() if p.name.endswith(".tmp"))
        self._columns: dict[str, np.ndarray] | None = None

    @property
    def n_frames(self) -> int:
        return sum(c.n_frames for c in self.chunks)

    def __len__(self) -> int:
        return self.n_frames

    def _locate(self, i: int) -> tuple[ChunkInfo, int]:
        n = self.n_frames
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range for a recording of {n} frames")
        i %= n
        for c in self.chunks:
            if i < c.n_frames:
                return c, i
            i -= c.n_frames
        raise IndexError(i)  # pragma: no cover

    def frame(self, i: int) -> np.ndarray:
        """Image i (0-based over the whole recording) [H, W, 3]."""
        c, j = self._locate(i)
        with self._h5py.File(c.path, "r") as f:
            return f["frames"][j]

    def iter_frames(self, start: int = 0, stop: int | None = None, step: int = 1
                    ) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        """(header dict, image) for frames start:stop:step, reading one chunk at a time."""
        if step < 1:
            raise ConfigError(f"step must be >= 1, got {step}")
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        base = 0
        for c in self.chunks:
            lo, hi = max(start, base), min(stop, base + c.n_frames)
            if lo < hi:
                first = lo + ((start - lo) % step)
                if first < hi:
                    with self._h5py.File(c.path, "r") as f:
                        heads = f["headers"][first - base:hi - base:step]
                        imgs = f["frames"][first - base:hi - base:step]
                    for h, im in zip(heads, imgs, strict=True):
                        yield json.loads(h), im
            base += c.n_frames
            if base >= stop:
                break

    def frames(self, start: int = 0, stop: int | None = None, step: int = 1) -> np.ndarray:
        """Images start:stop:step as one array [N, H, W, 3] (all chunks must share one shape)."""
        imgs = [im for _, im in self.iter_frames(start, stop, step)]
        if not imgs:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8)
        return np.stack(imgs)

    def headers(self) -> list[dict[str, Any]]:
        """Every frame's header as published (JSON dicts)."""
        out: list[dict[str, Any]] = []
        for c in self.chunks:
            with self._h5py.File(c.path, "r") as f:
                out.extend(json.loads(h) for h in f["headers"][()])
        return out

    def telemetry(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for c in self.chunks:
            with self._h5py.File(c.path, "r") as f:
                out.extend(json.loads(t) for t in f["telemetry"][()])
        return out

    def columns(self) -> dict[str, np.ndarray]:
        """seq, skipped, stimulus, ref_time, newest_ts, received concatenated over chunks."""
        if self._columns is None:
            names = ("seq", "skipped", "stimulus", "ref_time", "newest_ts", "received")
            parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
            for c in self.chunks:
                with self._h5py.File(c.path, "r") as f:
                    for k in names:
                        parts[k].append(f[k][()])
            self._columns = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}
        return self._columns

    def latency_stats(self) -> dict[str, Any]:
        """Newest sample -> receipt (and -> each header stage) in ms: n, mean, median, p95, p99, max.

        Valid when the recorder ran on the machine that stamped the headers (one monotonic clock).
        """
        cols = self.columns()
        out: dict[str, Any] = {"receipt": _percentiles(cols["received"] - cols["newest_ts"])}
        stages: dict[str, list[float]] = {}
        for h in self.headers():
            for name, t in (h.get("stages") or {}).items():
                stages.setdefault(name, []).append(float(t) - float(h["newest_ts"]))
        for name, vals in stages.items():
            out[f"stage:{name}"] = _percentiles(np.asarray(vals))
        seq = cols["seq"]
        out["seq_gaps"] = int(np.sum(np.diff(seq) - 1)) if seq.size > 1 else 0
        return out

    def summary(self) -> dict[str, Any]:
        cols = self.columns()
        return {"directory": str(self.directory), "frames": self.n_frames, "chunks": len(self.chunks),
                "first_seq": int(cols["seq"][0]) if self.n_frames else None,
                "last_seq": int(cols["seq"][-1]) if self.n_frames else None,
                "shapes": sorted({str(list(c.shape)) for c in self.chunks}),
                "bad_chunks": [f"{n}: {why}" for n, why in self.bad_chunks],
                "incomplete_temp_files": self.temp_files,
                "latency": self.latency_stats(), "manifest": self.manifest}


def open_recording_dir(directory: str | os.PathLike) -> FrameRecordingReader:
    """Open a directory written by FrameRecorder (`rtdecode record`, `rtdecode serve --record`)."""
    return FrameRecordingReader(directory)
