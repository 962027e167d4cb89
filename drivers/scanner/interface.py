"""The two interfaces of the scanner kind: a source of frames, and a source of codes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from drivers.health import Health
from drivers.scanner.code import Code

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Frame = npt.NDArray[np.uint8]


def __getattr__(name: str) -> Any:
    # ``Frame`` needs NumPy, which a scan engine never loads; it is built on first use
    if name == "Frame":
        import numpy as np
        import numpy.typing as npt

        frame = npt.NDArray[np.uint8]
        globals()["Frame"] = frame
        return frame
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Camera(ABC):
    """A camera delivering BGR frames.

    Backends must override :meth:`read_frame`, :meth:`health` and :meth:`close`; nothing else.
    """

    @abstractmethod
    def read_frame(self, timeout_s: float) -> Frame:
        """The next frame; raises ``DeviceTimeoutError`` when none comes within ``timeout_s``
        and ``DeviceUnavailableError`` when the camera is gone."""

    @abstractmethod
    def health(self) -> Health:
        """The camera's state as of its last read."""

    @abstractmethod
    def close(self) -> None:
        """Releases the device; safe to call twice."""


class CodeScanner(ABC):
    """Whatever turns a code held before the kiosk into text: a camera or a scan engine."""

    @abstractmethod
    def read_code(self, timeout_s: float) -> Code | None:
        """The next code presented, once per presentation, or ``None`` after ``timeout_s``."""

    @abstractmethod
    def health(self) -> Health:
        """Whether codes can be read now."""

    def frame_count(self) -> int | None:
        """Frames captured since the scanner opened; ``None`` when it reads no frames (a scan
        engine). Sampled over a window, it gives the camera's frame rate."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Stops reading and releases the device; safe to call twice."""
