"""The decode pipeline on real photos: right symbology, right text, nothing from noise."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.scanner import CodeDecoder, DecodeSettings, Symbology
from drivers.scanner._zbar import decode_qr_bytes
from tests.drivers.conftest import BARCODES, barcode_image, expected_text


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


def test_nothing_is_read_from_photos_without_codes(decoder):
    folder = BARCODES / "falsepositives-2"
    if not folder.exists():
        pytest.skip("test images not present")
    for path in sorted(folder.glob("*.png")):
        assert decoder.decode(barcode_image(f"falsepositives-2/{path.name}")) == (), path.name


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
