"""Pictures of the gifts on this kiosk: checked (:mod:`edge.protocol.pictures`), the copy a
tile shows kept in ``pictures/`` beside the ledger, named by the original's SHA-256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge.app import AppContext
from edge.domain.errors import InvalidInput
from edge.files import write_durably
from edge.protocol.pictures import PictureRefused, check_picture

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
    try:
        checked = check_picture(data, sha256)
    except PictureRefused as exc:
        raise InvalidInput(str(exc), code=exc.code) from None
    path = pictures_dir(app) / f"{checked.sha256}.png"
    write_durably(path, checked.shown)
    return Picture(checked.sha256, path, checked.width, checked.height)


def prune_pictures(app: AppContext, named: set[str], kept_max: int = KEPT_MAX) -> int:
    """Removes the scaled copies no gift names, oldest first, while more than ``kept_max``
    are kept (and leftovers of an interrupted write); returns how many went."""
    folder = pictures_dir(app)
    if not folder.is_dir():
        return 0
    removed = 0
    for partial in folder.glob(".*.tmp"):
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
