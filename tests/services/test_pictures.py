"""Gift pictures: checked before anything is kept, scaled once, shown on the tile; a forged,
broken or oversized picture is refused in one line and changes nothing, and a tile whose
picture is not on disk shows the gift's first character."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import pytest
from PIL import Image
from sqlalchemy import select

from edge.cli import main as cli
from edge.domain.errors import InvalidInput
from edge.protocol.pictures import SHOWN
from edge.services import gifts
from edge.services.pictures import pictures_dir, prune_pictures, take_picture
from edge.station.center import gift_tile
from edge.storage.models import Gift


def png(width: int, height: int, colour: str = "teal") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(out, format="JPEG", quality=80)
    return out.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few bytes (a decompression bomb's
    way in): its header and one empty data chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_a_picture_is_kept_scaled_to_a_tile_and_named_by_its_hash(app) -> None:
    data = jpeg(1600, 1200)
    picture = take_picture(app, data, hashlib.sha256(data).hexdigest())
    assert picture.sha256 == hashlib.sha256(data).hexdigest()
    assert (picture.width, picture.height) == (1600, 1200)
    assert picture.path == pictures_dir(app) / f"{picture.sha256}.png"
    with Image.open(picture.path) as shown:
        assert shown.format == "PNG" and max(shown.size) == SHOWN
        assert shown.size == (SHOWN, SHOWN * 3 // 4)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"GIF89a" + b"\x00" * 100, "picture_type"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "picture_broken"),
        (png(40, 40)[:-30], "picture_broken"),  # cut short
        (huge_png_header(5000, 100), "picture_too_large"),
        (huge_png_header(4001, 4001), "picture_too_large"),  # over 16 million pixels
        (b"\xff\xd8\xff" + b"\x00" * 2_000_000, "picture_too_large"),  # over 2 MB
    ],
)
def test_what_is_not_a_fitting_picture_is_refused(app, data: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        take_picture(app, data)
    assert refused.value.code == code and "\n" not in str(refused.value)
    folder = pictures_dir(app)
    assert not folder.exists() or not any(folder.iterdir())


def test_a_picture_must_be_the_one_the_catalogue_names(app) -> None:
    with pytest.raises(InvalidInput, match="SHA-256 differs"):
        take_picture(app, png(50, 50), hashlib.sha256(b"another").hexdigest())


def test_a_gift_with_a_bad_picture_is_not_added(app) -> None:
    with pytest.raises(InvalidInput):
        gifts.add_gift(app, "KETTLE", "电热水壶", 6000, 3, image=b"not a picture")
    with app.db.read() as s:
        assert s.get(Gift, "KETTLE") is None


def test_the_tile_shows_the_picture_or_the_first_character(app) -> None:
    line = gifts.add_gift(app, "TOWEL", "纯棉毛巾", 300, 5, image=png(800, 800))
    tile = gift_tile(app, line)
    assert tile.picture.endswith(f"{line.picture}.png")
    (pictures_dir(app) / f"{line.picture}.png").unlink()  # the cache lost it
    assert gift_tile(app, line).picture == ""
    plain = gift_tile(app, gifts.add_gift(app, "RICE5", "东北大米5kg", 1200, 5))
    assert plain.picture == ""


def test_a_new_picture_replaces_the_old_and_the_unused_ones_are_pruned(app) -> None:
    first = gifts.add_gift(app, "TOWEL", "纯棉毛巾", 300, 5, image=png(60, 60, "red"))
    second = gifts.set_gift_picture(app, "TOWEL", png(60, 60, "blue"))
    assert second.picture != first.picture
    with app.db.read() as s:
        assert s.scalar(select(Gift.picture).where(Gift.sku == "TOWEL")) == second.picture
    assert prune_pictures(app, {str(second.picture)}, kept_max=1) == 1
    assert [p.stem for p in pictures_dir(app).glob("*.png")] == [second.picture]


def test_kiosk_gift_picture_from_the_console(app, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("KIOSK_DATA_DIR", str(app.data_dir))
    good, bad = tmp_path / "towel.jpg", tmp_path / "towel.png"
    good.write_bytes(jpeg(640, 480))
    bad.write_bytes(b"<html>not a picture</html>")
    app.close()
    assert cli.main(["gift", "add", "--sku", "TOWEL", "--name", "毛巾", "--points", "300",
                     "--stock", "5", "--image", str(bad)]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "not a PNG or JPEG picture" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["gift", "add", "--sku", "TOWEL", "--name", "毛巾", "--points", "300",
                     "--stock", "5", "--image", str(good)]) == 0  # fmt: skip
    assert cli.main(["gift", "picture", "TOWEL", str(good), "--json"]) == 0
    assert hashlib.sha256(good.read_bytes()).hexdigest() in capsys.readouterr().out
