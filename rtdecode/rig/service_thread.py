"""The service of the rig: a DecoderService running in a thread of this process."""

from __future__ import annotations

import threading


class ServiceThread:
    """Runs DecoderService(config, **kwargs).run() in a thread; `join()` returns the summary or re-raises."""

    def __init__(self, config, **kwargs):
        from ..service import DecoderService

        self.service = DecoderService(config, **kwargs)
        self.summary = None
        self.exc: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="rtdecode-service", daemon=True)

    def _run(self) -> None:
        try:
            self.summary = self.service.run()
        except BaseException as e:  # handed to the caller by start() or join()
            self.exc = e

    def start(self, timeout: float = 60.0) -> ServiceThread:
        """Start the thread and wait until the service runs (or failed: its error is raised here).

        DecoderService sets `started` when its loop is about to run and also when run() ends.
        """
        self.thread.start()
        if not self.service.started.wait(timeout):
            raise TimeoutError(f"service did not start within {timeout} s")
        if self.exc is not None:
            raise self.exc
        return self

    @property
    def endpoint(self) -> str:
        return self.service.endpoint

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float = 30.0, stop: bool = True, reason: str = "test finished"):
        """Stop the service (unless stop=False) and wait for it; returns its summary or raises its error."""
        if stop:
            self.service.stop(reason)
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"service did not stop within {timeout} s")
        if self.exc is not None:
            raise self.exc
        return self.summary

    def __enter__(self) -> ServiceThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.service.stop("left the block")
        self.thread.join(30)
