"""A simulated camera that plays images or a video file in a loop, with injected faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from drivers._lazy import require
from drivers.errors import DeviceTimeoutError, DeviceUnavailableError
from drivers.health import Health
from drivers.scanner.interface import Camera, Frame


class SimulatedCamera(Camera):
    """Plays frames at ``fps`` like a real camera, so the live pipeline runs on a laptop.

    With no images it shows an empty grey desk. Each image is held for ``hold_frames``
    frames, as a customer holds a phone still. Faults are injected by methods a test or the
    technician simulator calls: :meth:`unplug`, :meth:`freeze` (no frames, as a hung USB
    camera) and :meth:`show` (put a given frame before the lens).

    Example:
        >>> camera = SimulatedCamera(["card.png"], fps=30)
        >>> frame = camera.read_frame(timeout_s=1.0)  # doctest: +SKIP
    """

    def __init__(
        self,
        sources: Sequence[str | Path] = (),
        fps: float = 30.0,
        hold_frames: int = 15,
        size: tuple[int, int] = (640, 480),
    ) -> None:
        self._cv2 = require("cv2", "install opencv-python-headless")
        self._fps = fps
        self._hold = max(1, hold_frames)
        self._size = size
        self._frames = self._load(sources)
        self._index = 0
        self._shown: Frame | None = None
        self._unplugged = False
        self._frozen = False
        self._lock = threading.Lock()
        self._next_due = time.monotonic()
        self._health = Health.ok()

    def _load(self, sources: Sequence[str | Path]) -> list[Frame]:
        frames: list[Frame] = []
        for source in sources:
            path = Path(source)
            if path.suffix.lower() in {".mp4", ".avi", ".mkv", ".mov"}:
                capture = self._cv2.VideoCapture(str(path))
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    frames.append(frame)
                capture.release()
                continue
            image = self._cv2.imread(str(path))
            if image is None:
                raise FileNotFoundError(f"cannot read image {path}")
            frames.extend([image] * self._hold)
        return frames

    def blank(self) -> Frame:
        width, height = self._size
        return np.full((height, width, 3), 128, np.uint8)

    def show(self, frame: Frame | None) -> None:
        """Puts ``frame`` before the lens until ``show(None)``."""
        with self._lock:
            self._shown = frame

    def unplug(self) -> None:
        with self._lock:
            self._unplugged = True

    def replug(self) -> None:
        with self._lock:
            self._unplugged = False
            self._frozen = False

    def freeze(self) -> None:
        with self._lock:
            self._frozen = True

    def read_frame(self, timeout_s: float) -> Frame:
        with self._lock:
            unplugged, frozen = self._unplugged, self._frozen
        if unplugged:
            self._health = Health.failed("disconnected", "camera unplugged")
            raise DeviceUnavailableError(self._health)
        if frozen:
            time.sleep(timeout_s)
            self._health = Health.failed("timeout", f"camera gave no frame in {timeout_s:g} s")
            raise DeviceTimeoutError(self._health)
        delay = self._next_due - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, timeout_s))
        self._next_due = max(self._next_due, time.monotonic()) + 1.0 / self._fps
        self._health = Health.ok()
        with self._lock:
            if self._shown is not None:
                return self._shown
        if not self._frames:
            return self.blank()
        frame = self._frames[self._index % len(self._frames)]
        self._index += 1
        return frame

    def health(self) -> Health:
        return self._health

    def close(self) -> None:
        self._frames = []
