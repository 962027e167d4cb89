"""The decode pipeline on real photos: right symbology, right text, nothing from noise."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.scanner import CodeDecoder, DecodeSettings, Symbology
from drivers.scanner._zbar import decode_qr_bytes
from tests.drivers.conftest import (
    BARCODES,
    FULL_SETS,
    NO_CODE_SET,
    barcode_image,
    curated_images,
    expected_text,
    full_set,
)

SYMBOLOGY_OF_SET = {
    "qrcode": Symbology.QR_CODE,
    "ean13": Symbology.EAN_13,
    "code128": Symbology.CODE_128,
}


@pytest.fixture(scope="module")
def decoder() -> CodeDecoder:
    return CodeDecoder()


@pytest.mark.parametrize(
    ("image", "symbology"),
    [
        ("qrcode-5/01.png", Symbology.QR_CODE),
        ("code128-1/1.png", Symbology.CODE_128),
        ("ean13-4/01.png", Symbology.EAN_13),
    ],
)
def test_reads_each_member_center_symbology(decoder, image, symbology):
    codes = decoder.decode(barcode_image(image))
    assert [(c.format, c.text.replace("\r\n", "\n").rstrip()) for c in codes] == [
        (symbology, expected_text(image))
    ]


@pytest.mark.parametrize("image", curated_images(with_code=True))
def test_every_curated_photo_reads_as_its_label(decoder, image):
    symbology = SYMBOLOGY_OF_SET[image.split("-")[0]]
    codes = decoder.decode(barcode_image(image))
    assert [(c.format, c.text.replace("\r\n", "\n").rstrip()) for c in codes] == [
        (symbology, expected_text(image))
    ]


def test_utf8_chinese_in_a_qr_code_is_not_mangled(decoder):
    codes = decoder.decode(barcode_image("qrcode-2/30.png"))
    assert [c.text for c in codes] == ["MECARD:N:測試;;"]


def test_fallback_finds_a_code_the_cheap_pass_misses(decoder):
    image = barcode_image("ean13-2/10.png")
    cheap = CodeDecoder(DecodeSettings(fallbacks=False))
    assert cheap.decode(image) == ()
    assert [c.text for c in decoder.decode(image)] == [expected_text("ean13-2/10.png")]


def test_code128_extended_characters_are_read_exactly(decoder):
    # ZBar drops the FNC4 high bit here ("ssss..."); the pipeline must report zxing's reading.
    assert [c.text for c in decoder.decode(barcode_image("code128-1/6.png"))] == [
        expected_text("code128-1/6.png")
    ]


@pytest.mark.parametrize("image", curated_images(with_code=False))
def test_nothing_is_read_from_photos_without_codes(decoder, image):
    assert decoder.decode(barcode_image(image)) == ()


def test_nothing_is_read_from_any_photo_of_the_full_no_code_set(decoder):
    folder = full_set(NO_CODE_SET)
    paths = sorted(folder.glob("*.png"))
    assert paths
    for path in paths:
        assert decoder.decode(barcode_image(path.name, folder)) == (), path.name


def test_the_curated_photos_are_the_full_sets_own_files():
    for path in sorted(p for p in BARCODES.glob("*/*") if p.suffix in {".png", ".txt"}):
        relative = path.relative_to(BARCODES)
        original = full_set(relative.parent.as_posix()) / relative.name
        assert path.read_bytes() == original.read_bytes(), relative
    assert (BARCODES / "LICENSE").read_bytes() == (FULL_SETS / "LICENSE").read_bytes()


def test_only_configured_symbologies_are_reported():
    only_qr = CodeDecoder(DecodeSettings(symbologies=frozenset({Symbology.QR_CODE})))
    assert only_qr.decode(barcode_image("ean13-4/01.png")) == ()


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_frame_without_code_is_rejected_fast(decoder, kind):
    rng = np.random.default_rng(1)
    frame = (
        np.full((480, 640, 3), 200, np.uint8)
        if kind == "blank"
        else rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    )
    decoder.decode(frame)
    start = time.perf_counter()
    for _ in range(20):
        assert decoder.decode(frame) == ()
    assert (time.perf_counter() - start) / 20 < 0.005


def test_qr_bytes_are_decoded_utf8_first_then_legacy_encodings():
    assert decode_qr_bytes("会员中心".encode()) == "会员中心"
    assert decode_qr_bytes("ﾃﾞｻﾞｲﾝ".encode("shift_jis")) == "ﾃﾞｻﾞｲﾝ"
    assert decode_qr_bytes(b"\xff\xfe\xfd") == "ÿþý"


def _symbol(text: str, fmt: str, scale: int) -> np.ndarray:
    zxingcpp = pytest.importorskip("zxingcpp")
    image = zxingcpp.create_barcode(text, getattr(zxingcpp.BarcodeFormat, fmt)).to_image(
        scale=scale
    )
    return np.asarray(image, dtype=np.uint8)


def _frame(*placed: tuple[np.ndarray, int, int], size: tuple[int, int] = (480, 640)) -> np.ndarray:
    frame = np.full(size, 255, np.uint8)
    for symbol, top, left in placed:  # cropped where it runs off the frame
        view = frame[top : top + symbol.shape[0], left : left + symbol.shape[1]]
        view[...] = symbol[: view.shape[0], : view.shape[1]]
    return frame


@pytest.mark.parametrize("big_first", [True, False])
def test_of_two_codes_the_larger_is_presented_and_the_other_kept_secondary(decoder, big_first):
    big = (_symbol("M1-BIG", "QRCode", 8), 100, 60)
    small = (_symbol("M1-SMALL", "QRCode", 3), 30, 480)
    frame = _frame(*((big, small) if big_first else (small, big)))
    result = decoder.scan(frame)
    assert result.presented is not None
    assert result.presented.code.text == "M1-BIG"
    assert [c.code.text for c in result.secondary] == ["M1-SMALL"]
    assert result.presented.area > 4 * result.secondary[0].area
    assert [c.text for c in decoder.decode(frame)] == ["M1-BIG"]


def test_a_larger_barcode_beats_a_smaller_qr_code(decoder):
    frame = _frame(
        (_symbol("M1-SMALL", "QRCode", 3), 20, 20), (_symbol("4006381333931", "EAN13", 4), 200, 120)
    )
    assert [c.text for c in decoder.decode(frame)] == ["4006381333931"]


def test_codes_of_about_the_same_size_go_to_the_one_nearest_the_centre(decoder):
    qr = _symbol("M1-A", "QRCode", 5)
    other = _symbol("M1-B", "QRCode", 5)
    frame = _frame((qr, 20, 20), (other, 180, 260))  # other is about central
    assert [c.text for c in decoder.decode(frame)] == ["M1-B"]


def test_a_barcode_cut_by_the_frame_edge_loses_to_a_smaller_one_in_full_view(decoder):
    cut = _symbol("4006381333931", "EAN13", 5)  # 550 px wide; its bars run off the bottom
    whole = _symbol("5901234123457", "EAN13", 3)
    frame = _frame((whole, 40, 170), (cut, 330, 40))
    result = decoder.scan(frame)
    assert result.presented is not None and result.presented.code.text == "5901234123457"
    assert result.presented.in_full_view
    assert [(c.code.text, c.in_full_view) for c in result.secondary] == [("4006381333931", False)]
    # the cut code is larger in view: only being cut makes it lose
    assert result.secondary[0].area > result.presented.area


def test_a_barcode_alone_is_reported_even_when_cut_by_the_frame_edge(decoder):
    frame = _frame((_symbol("4006381333931", "EAN13", 5), 330, 40))
    result = decoder.scan(frame)
    assert result.presented is not None and not result.presented.in_full_view
    assert [c.text for c in result.codes] == ["4006381333931"]


def test_a_nested_qr_code_reports_the_outer_one(decoder):
    result = decoder.scan(barcode_image("qrcode-2/16.png"))
    assert result.presented is not None
    assert result.presented.code.text.replace("\r\n", "\n").rstrip() == expected_text(
        "qrcode-2/16.png"
    )
    assert [c.code.text.startswith("[内側QRコード]") for c in result.secondary] == [True]


@pytest.mark.parametrize("image", ["ean13-2/14.png", "ean13-2/20.png", "ean13-2/24.png"])
def test_a_book_reports_the_barcode_in_view_not_the_one_cut_by_the_edge(decoder, image):
    result = decoder.scan(barcode_image(image))
    assert [c.text for c in result.codes] == [expected_text(image)]
    assert result.presented is not None and result.presented.in_full_view
    assert [c.in_full_view for c in result.secondary] == [False]


def test_the_first_reading_of_a_symbol_stands_over_a_later_misreading(decoder):
    # zxing-cpp reads this tightly cropped (hence cut) Code 128 right; ZBar, run next to look
    # for a code in full view, reads the same symbol as "ssss..."
    result = decoder.scan(barcode_image("code128-1/6.png"))
    assert [c.text for c in result.codes] == [expected_text("code128-1/6.png")]
    assert result.secondary == ()


def test_a_micro_qr_code_in_view_is_not_ours_and_breaks_nothing(decoder):
    # zxing-cpp answers a QR search with Micro QR codes too; they are not member-center codes
    import zxingcpp

    micro = np.array(
        zxingcpp.create_barcode("12345", zxingcpp.BarcodeFormat.MicroQRCode).to_image(scale=8)
    )
    padded = np.pad(micro, 40, constant_values=255)
    assert decoder.decode(padded) == ()
