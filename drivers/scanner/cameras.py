"""Real cameras: Picamera2 for Raspberry Pi camera modules, OpenCV for USB cameras."""

from __future__ import annotations

import threading
from typing import Any

from drivers._lazy import require
from drivers.errors import DeviceTimeoutError, DeviceUnavailableError
from drivers.health import Health
from drivers.scanner.interface import Camera, Frame


class OpenCvCamera(Camera):
    """A USB (UVC) camera through ``cv2.VideoCapture``.

    ``source`` is a device index ("0"), a path ("/dev/v4l/by-id/...-video-index0") or a
    GStreamer pipeline ending in ``appsink``. OpenCV cannot open libcamera CSI cameras; use
    :class:`Picamera2Camera` for those.

    Example:
        >>> camera = OpenCvCamera("0", width=640, height=480)  # doctest: +SKIP
        >>> frame = camera.read_frame(timeout_s=1.0)  # doctest: +SKIP
    """

    def __init__(self, source: str, width: int = 640, height: int = 480) -> None:
        self._cv2 = require("cv2", "install opencv-python-headless")
        target: int | str = int(source) if source.isdigit() else source
        api = self._cv2.CAP_GSTREAMER if "appsink" in source else self._cv2.CAP_ANY
        self._capture = self._cv2.VideoCapture(target, api)
        if not self._capture.isOpened():
            raise DeviceUnavailableError(
                Health.failed("disconnected", f"camera {source!r} cannot be opened")
            )
        self._capture.set(self._cv2.CAP_PROP_FRAME_WIDTH, width)
        self._capture.set(self._cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._capture.set(self._cv2.CAP_PROP_BUFFERSIZE, 1)  # keep latency to one frame
        self._health = Health.ok()
        self._source = source

    def read_frame(self, timeout_s: float) -> Frame:
        # VideoCapture.read() can hang on an unplugged V4L2 device; a helper thread bounds it.
        return _bounded(self._read_once, timeout_s, f"camera {self._source!r}", self)

    def _read_once(self) -> Frame:
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise DeviceUnavailableError(Health.failed("disconnected", "camera returned no frame"))
        return frame  # type: ignore[no-any-return]

    def health(self) -> Health:
        return self._health

    def set_health(self, health: Health) -> None:
        self._health = health

    def close(self) -> None:
        self._capture.release()


class Picamera2Camera(Camera):
    """A Raspberry Pi camera module through libcamera's Picamera2.

    picamera2 comes from Raspberry Pi OS packages (``python3-picamera2``); the appliance's
    virtual environment sees system site-packages for it.
    """

    def __init__(self, width: int = 640, height: int = 480) -> None:
        module = require(
            "picamera2", "install python3-picamera2 and create the venv with --system-site-packages"
        )
        try:
            self._camera: Any = module.Picamera2()
            config = self._camera.create_video_configuration(
                main={"size": (width, height), "format": "BGR888"}, buffer_count=2
            )
            self._camera.configure(config)
            self._camera.start()
        except (RuntimeError, IndexError, OSError) as exc:
            raise DeviceUnavailableError(
                Health.failed("disconnected", f"no Pi camera: {exc}")
            ) from exc
        self._health = Health.ok()

    def read_frame(self, timeout_s: float) -> Frame:
        return _bounded(lambda: self._camera.capture_array("main"), timeout_s, "Pi camera", self)

    def health(self) -> Health:
        return self._health

    def set_health(self, health: Health) -> None:
        self._health = health

    def close(self) -> None:
        self._camera.stop()
        self._camera.close()


def _bounded(read: Any, timeout_s: float, what: str, camera: Any) -> Frame:
    """Runs a blocking driver read on a daemon thread and gives up after ``timeout_s``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["frame"] = read()
        except Exception as exc:  # re-raised on the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name="camera-read")
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        camera.set_health(Health.failed("timeout", f"{what} gave no frame in {timeout_s:g} s"))
        raise DeviceTimeoutError(camera.health())
    if "error" in box:
        error = box["error"]
        if isinstance(error, DeviceUnavailableError):
            camera.set_health(error.health)
        raise error
    camera.set_health(Health.ok())
    return box["frame"]  # type: ignore[no-any-return]
