"""What a gift's picture must be, wherever it comes from (a file at a kiosk's console, HQ's
catalogue): at most :data:`~edge.protocol.messages.MAX_PICTURE_BYTES`, a PNG or a JPEG by its
content (not its name), at most :data:`MAX_SIDE` pixels a side and :data:`MAX_PIXELS` in
all (read from the header, before any pixel is decoded), whole (its checksums verified) and,
when a catalogue names its SHA-256, that file. What a screen shows is a copy no larger than
:data:`SHOWN` pixels a side. Pillow is imported when a picture is checked, never by the
touchscreen's process.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from edge.protocol.messages import MAX_PICTURE_BYTES, ProtocolError

MAX_SIDE = 4096
MAX_PIXELS = 16_000_000
SHOWN = 200  # the longer side of the copy a tile draws (about its size on the screens)


class PictureRefused(ProtocolError):
    """Not a picture a gift may have; ``code`` says which check it failed."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CheckedPicture:
    sha256: str  # of the file as given
    width: int
    height: int
    shown: bytes  # a PNG no larger than SHOWN a side


def check_picture(data: bytes, sha256: str | None = None) -> CheckedPicture:
    """``data`` checked, with the copy a screen shows; :class:`PictureRefused` saying in one
    line what is wrong with it."""
    if len(data) > MAX_PICTURE_BYTES:
        raise PictureRefused(
            f"the picture is {len(data) / 1e6:.1f} MB: at most {MAX_PICTURE_BYTES / 1e6:.0f} MB",
            "picture_too_large",
        )
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256.lower():
        raise PictureRefused(
            "the picture is not the one the catalogue names (SHA-256 differs)", "picture_hash"
        )
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as image:
            width, height = image.size
            if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
                raise PictureRefused(
                    f"the picture is {width}x{height} pixels: at most {MAX_SIDE} a side and "
                    f"{MAX_PIXELS // 1_000_000} million in all",
                    "picture_too_large",
                )
            image.verify()  # the whole file, its checksums included
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as image:
            image.draft("RGB", (SHOWN, SHOWN))  # a JPEG is decoded at a fraction of its size
            small = image.convert("RGBA")
            small.thumbnail((SHOWN, SHOWN))
    except UnidentifiedImageError:
        raise PictureRefused("the file is not a PNG or JPEG picture", "picture_type") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, PictureRefused):
            raise
        raise PictureRefused(
            f"the picture cannot be read: {str(exc)[:120]}", "picture_broken"
        ) from None
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return CheckedPicture(digest, width, height, out.getvalue())
