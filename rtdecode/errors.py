"""Exceptions with context, one class per recovery policy of the serve loop.

Policy (see docs/serving.md):
- ConfigError, LayoutError, ModelError, StreamMismatchError: stop at start-up, nothing decoded.
- StreamNotFoundError: stop after the resolve timeout, listing the streams that were seen.
- StreamLostError: reconnect with backoff, count the gap, resume publishing.
- EngineError: stop; an engine that cannot run is never replaced silently.
Bad samples (NaN/Inf, gaps, disordered timestamps) are no exception: the serve loop counts them
and skips or flags each window that holds them (ServeConfig.on_bad_samples).
"""

from __future__ import annotations


class RtdecodeError(Exception):
    """Base class of every error rtdecode raises on purpose."""


class ConfigError(RtdecodeError, ValueError):
    """A configuration value or file is invalid; the message names the key and what was expected."""


class LayoutError(RtdecodeError, ValueError):
    """An electrode layout is malformed or disagrees with the data it is used with."""


class SessionError(RtdecodeError, ValueError):
    """A recorded session (or dataset file) is malformed: wrong arrays, NaN/Inf, missing images."""


class ModelError(RtdecodeError, ValueError):
    """A model file is not an rtdecode decoder, or its metadata is incomplete or inconsistent."""

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class EngineError(RtdecodeError, RuntimeError):
    """An inference engine cannot be created or failed; names the engine."""

    def __init__(self, message: str, *, engine: str):
        self.engine = engine
        super().__init__(f"[engine {engine}] {message}")


class StreamNotFoundError(RtdecodeError, LookupError):
    """No LSL stream matched within the timeout; lists the streams that were seen."""

    def __init__(self, message: str, *, query: str, seen: list[str] | None = None):
        self.query = query
        self.seen = list(seen or [])
        seen_txt = ", ".join(self.seen) if self.seen else "none"
        super().__init__(f"{message} (query: {query}; streams seen: {seen_txt})")


class StreamMismatchError(RtdecodeError, ValueError):
    """A stream's channel count, format or rate disagrees with the model's layout."""

    def __init__(self, message: str, *, stream: str):
        self.stream = stream
        super().__init__(f"stream {stream!r}: {message}")


class StreamLostError(RtdecodeError, ConnectionError):
    """The LSL outlet vanished mid-run."""

    def __init__(self, message: str, *, stream: str):
        self.stream = stream
        super().__init__(f"stream {stream!r}: {message}")
