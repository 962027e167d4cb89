"""Live scanning: capture on one thread, decode the newest frame on another, debounce."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from drivers.errors import DeviceError
from drivers.health import Health
from drivers.scanner.code import Code
from drivers.scanner.debounce import Debouncer
from drivers.scanner.decode import CodeDecoder
from drivers.scanner.interface import Camera, CodeScanner, Frame

log = logging.getLogger(__name__)


class CameraScanner(CodeScanner):
    """Reads codes from a camera without ever blocking the caller or the camera.

    The capture thread keeps only the newest frame (a stale one is overwritten, never
    queued), so decoding slower than the frame rate costs frames, not latency. The decode
    thread runs the pipeline on that newest frame (with the costly fallbacks on one frame in
    ``fallback_every``, or when the cheap pass saw only a code cut by the frame edge) and
    passes the presented code, if new, through a
    :class:`Debouncer`. A camera that fails is retried every ``retry_s``, so replugging it
    heals the scanner without a restart.

    Example:
        >>> scanner = CameraScanner(lambda: SimulatedCamera(["member-qr.png"]))
        >>> scanner.read_code(timeout_s=2.0)  # doctest: +SKIP
        Code(format=<Symbology.QR_CODE: 'QR_CODE'>, text='...')
    """

    def __init__(
        self,
        open_camera: Callable[[], Camera],
        decoder: CodeDecoder | None = None,
        debouncer: Debouncer | None = None,
        frame_timeout_s: float = 2.0,
        retry_s: float = 2.0,
        fallback_every: int = 4,
    ) -> None:
        self._open_camera = open_camera
        self._decoder = decoder or CodeDecoder()
        self._debouncer = debouncer or Debouncer()
        self._frame_timeout_s = frame_timeout_s
        self._retry_s = retry_s
        self._fallback_every = max(1, fallback_every)
        self._codes: queue.Queue[Code] = queue.Queue(maxsize=32)
        self._latest: Frame | None = None
        self._frame_ready = threading.Condition()
        self._stop = threading.Event()
        self._health = Health.degraded("starting", "camera starting")
        self.frames_captured = 0
        self.frames_decoded = 0
        self._threads = [
            threading.Thread(target=self._capture_loop, name="scan-capture", daemon=True),
            threading.Thread(target=self._decode_loop, name="scan-decode", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def read_code(self, timeout_s: float) -> Code | None:
        try:
            return self._codes.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def health(self) -> Health:
        return self._health

    def frame_count(self) -> int | None:
        return self.frames_captured

    def close(self) -> None:
        self._stop.set()
        with self._frame_ready:
            self._frame_ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=self._frame_timeout_s + 1.0)

    def _capture_loop(self) -> None:
        camera: Camera | None = None
        while not self._stop.is_set():
            try:
                if camera is None:
                    camera = self._open_camera()
                frame = camera.read_frame(self._frame_timeout_s)
            except DeviceError as exc:
                self._health = exc.health
                log.warning("camera: %s", exc.health.reason)
                if camera is not None:
                    camera.close()
                    camera = None
                self._stop.wait(self._retry_s)
                continue
            self._health = Health.ok()
            with self._frame_ready:
                self._latest = frame  # a frame not yet decoded is simply replaced
                self.frames_captured += 1
                self._frame_ready.notify()
        if camera is not None:
            camera.close()

    def _decode_loop(self) -> None:
        while not self._stop.is_set():
            with self._frame_ready:
                while self._latest is None and not self._stop.is_set():
                    self._frame_ready.wait(0.5)
                frame, self._latest = self._latest, None
            if frame is None:
                continue
            # the expensive fallbacks on one frame in n: a held code stays for many frames,
            # and a kiosk facing an empty aisle all day should not burn a core on them
            fallbacks = self.frames_decoded % self._fallback_every == 0
            result = self._decoder.scan(frame, fallbacks=fallbacks)
            if not fallbacks and result.presented and not result.presented.in_full_view:
                # a code cut by the frame edge may sit beside the presented one that only the
                # fallbacks read; reporting it first would make it a scan
                result = self._decoder.scan(frame, fallbacks=True)
            self.frames_decoded += 1
            # only the presented code: one frame is at most one scan
            for code in self._debouncer.feed(result.codes, time.monotonic()):
                try:
                    self._codes.put_nowait(code)
                except queue.Full:
                    log.warning("scanner: nobody reads codes; dropped %s", code.format)
