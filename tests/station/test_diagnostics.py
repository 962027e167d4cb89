"""What the technician screen reads: the log's last whole lines, and the lines as shown."""

from __future__ import annotations

from edge.station.diagnostics import tail
from kiosk.viewmodels.technician import LOG_LINE_CHARS, log_lines


def test_the_tail_leaves_out_a_line_cut_by_its_window(tmp_path):
    log = tmp_path / "kiosk.log"
    giant = "2026-12-07 00:18:17,541 INFO fontTools.subset: Glyph IDs: " + ", ".join(
        str(n) for n in range(20_000)
    )
    log.write_text(
        "2026-12-07 00:18:00,001 INFO kiosk.app: started\n"
        + giant
        + "\n2026-12-07 00:20:05,100 WARNING edge.station.devices: dispenser: card jammed\n"
        "2026-12-07 00:20:14,200 INFO edge.station.monitoring: dispenser is ok\n",
        encoding="utf-8",
    )
    lines = tail(log, 40, window=4096)
    assert lines == [
        "2026-12-07 00:20:05,100 WARNING edge.station.devices: dispenser: card jammed",
        "2026-12-07 00:20:14,200 INFO edge.station.monitoring: dispenser is ok",
    ]
    assert tail(log, 1) == lines[-1:]
    assert tail(tmp_path / "missing.log", 40) == []
    # a file shorter than the window: every line, the first included
    short = tmp_path / "short.log"
    short.write_text("one\ntwo\n", encoding="utf-8")
    assert tail(short, 40) == ["one", "two"]


def test_log_lines_are_newest_first_short_and_marked():
    shown = log_lines(
        [
            "2026-12-07 00:18:00,001 INFO kiosk.app: started",
            "2026-12-07 00:20:05,100 WARNING edge.station.devices: dispenser: card jammed",
            "2026-12-07 00:20:06,100 ERROR edge.sync.agent: HQ refused the batch",
            "",
            "a line in no known format " + "x" * 400,
        ]
    )
    assert shown[0].startswith("a line in no known format") and shown[0].endswith("…")
    assert len(shown[0]) == LOG_LINE_CHARS
    assert shown[1:] == [
        "00:20:06 !! HQ refused the batch",
        "00:20:05 ! dispenser: card jammed",
        "00:18:00 started",
    ]
