"""The progress bar long work shows on a terminal, and the plain lines it writes elsewhere."""

from __future__ import annotations

import io

from edge.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_redrawn_with_rate_and_time_left():
    out = Terminal()
    with Progress("importing", 200, "members", stream=out) as bar:
        bar.advance(50)
        line = bar.line()
        assert line.startswith("importing [#######---------------------] 50/200 members ")
        assert line.endswith(" left") and "members/s" in line
        bar.advance(150)
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "200/200 members" in text.rsplit("\r", 1)[-1]


def test_a_file_gets_plain_lines_and_an_empty_job_is_done_at_once():
    out = io.StringIO()
    with Progress("copying", 0, stream=out) as bar:
        assert bar.line().startswith("copying [############################] 0/0 ")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert out.getvalue().count("\n") == 1
