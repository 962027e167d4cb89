"""Pictures of the gifts: checked, scaled once to the size a tile shows, kept on disk.

A picture comes from outside (a file a technician names, later HQ's catalogue), so it is
checked before anything keeps it: at most :data:`MAX_BYTES`, a PNG or a JPEG by its content
(not its name), at most :data:`MAX_SIDE` pixels a side and :data:`MAX_PIXELS` in all (read
from the header, before any pixel is decoded), and, when the catalogue names its SHA-256, that
hash. What is kept is a copy no larger than :data:`SHOWN` pixels a side, named by the
original's SHA-256, in ``pictures/`` beside the ledger: the touchscreen loads that small copy
and never a full-size image. Pillow is imported here only, never by the touchscreen's process.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edge.app import AppContext
from edge.domain.errors import InvalidInput

MAX_BYTES = 2_000_000
MAX_SIDE = 4096
MAX_PIXELS = 16_000_000
SHOWN = 320  # the longer side of the copy a tile draws
KEPT_MAX = 500  # pictures kept on disk at most; those no gift names go first
_SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Picture:
    sha256: str
    path: Path  # the scaled copy
    width: int  # of the original
    height: int


def pictures_dir(app: AppContext) -> Path:
    return app.data_dir / "pictures"


def shown_path(app: AppContext, sha256: str | None) -> Path | None:
    """The scaled copy of picture ``sha256`` if it is on disk."""
    if not sha256 or not _SHA.match(sha256):
        return None
    path = pictures_dir(app) / f"{sha256}.png"
    return path if path.is_file() else None


def take_picture(app: AppContext, data: bytes, sha256: str | None = None) -> Picture:
    """Checks ``data`` and keeps its scaled copy; the picture, or :class:`InvalidInput`
    saying in one line what is wrong with it (nothing is kept then)."""
    if len(data) > MAX_BYTES:
        raise InvalidInput(
            f"the picture is {len(data) / 1e6:.1f} MB: at most {MAX_BYTES / 1e6:.0f} MB",
            code="picture_too_large",
        )
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256.lower():
        raise InvalidInput(
            "the picture is not the one the catalogue names (SHA-256 differs)",
            code="picture_hash",
        )
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as image:
            width, height = image.size
            if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
                raise InvalidInput(
                    f"the picture is {width}x{height} pixels: at most {MAX_SIDE} a side and "
                    f"{MAX_PIXELS // 1_000_000} million in all",
                    code="picture_too_large",
                )
            image.verify()  # the whole file, its checksums included
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as image:
            image.draft("RGB", (SHOWN, SHOWN))  # a JPEG is decoded at a fraction of its size
            shown = image.convert("RGBA")
            shown.thumbnail((SHOWN, SHOWN))
    except UnidentifiedImageError:
        raise InvalidInput("the file is not a PNG or JPEG picture", code="picture_type") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(
            f"the picture cannot be read: {str(exc)[:120]}", code="picture_broken"
        ) from None
    folder = pictures_dir(app)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.png"
    partial = path.with_suffix(".part")
    with partial.open("wb") as out:
        shown.save(out, format="PNG", optimize=True)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    return Picture(digest, path, width, height)


def prune_pictures(app: AppContext, named: set[str], kept_max: int = KEPT_MAX) -> int:
    """Removes the scaled copies no gift names, oldest first, while more than ``kept_max``
    are kept (and leftovers of an interrupted write); returns how many went."""
    folder = pictures_dir(app)
    if not folder.is_dir():
        return 0
    removed = 0
    for partial in folder.glob("*.part"):
        partial.unlink(missing_ok=True)
        removed += 1
    kept = sorted(folder.glob("*.png"), key=lambda p: p.stat().st_mtime)
    over = len(kept) - kept_max
    for path in kept:
        if over <= 0:
            break
        if path.stem not in named:
            path.unlink(missing_ok=True)
            removed += 1
            over -= 1
    return removed
