"""A clean stop on SIGTERM / SIGINT: the loop finishes the current step, saves and returns."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

log = logging.getLogger(__name__)


class StopRequest:
    """``name`` becomes the signal's name (``"SIGTERM"``) once one arrives while :meth:`installed` is active."""

    def __init__(self) -> None:
        self.name: str | None = None

    @contextlib.contextmanager
    def installed(self):
        """Install handlers for SIGTERM and SIGINT; put the previous ones back afterwards.

        Only on the main thread (Python delivers signals there). A second signal while stopping raises
        ``KeyboardInterrupt``: stop at once, without saving.
        """
        self.name = None
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self.name is not None:
                raise KeyboardInterrupt
            self.name = signal.Signals(signum).name
            log.warning("%s received: finishing the current step, then saving a checkpoint (send it again "
                        "to stop at once without saving)", self.name)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
