"""What the touchscreen process loads and how it keeps its memory (no window needed)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from kiosk.boot import _libc_function, give_back_memory, input_providers, tune_allocator

# image libraries (cameras, receipt pictures), MQTT (the sync agent's), migrations
NOT_IN_THE_TOUCHSCREEN = ("cv2", "zxingcpp", "pyzbar", "numpy", "PIL", "paho", "alembic")


def test_the_simulated_center_with_kivy_configured_loads_none_of_the_heavy_libraries(tmp_path):
    from kiosk.__main__ import open_center

    open_center(tmp_path / "data", simulate=True).close()  # the schema, made here
    script = f"""
import sys
from pathlib import Path
from kiosk.__main__ import open_center
from kiosk.boot import configure_kivy
from edge.systemd import sd_notify
center = open_center(Path({str(tmp_path / "data")!r}), simulate=True)
statuses = center.device_status()
configure_kivy(kivy_home=Path({str(tmp_path / "kivy")!r}), provider="mouse", fullscreen=False,
               size=(1280, 800))
import kivy.core.image  # Kivy's image providers: SDL2 only
center.close()
print([m for m in {NOT_IN_THE_TOUCHSCREEN!r} if m in sys.modules])
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert ast.literal_eval(run.stdout.strip().splitlines()[-1]) == []


def test_the_allocator_is_tuned_on_glibc():
    import platform

    libc, _version = platform.libc_ver()
    assert tune_allocator() is (libc == "glibc")


def test_giving_memory_back_looks_the_c_library_up_once():
    give_back_memory()
    before = _libc_function.cache_info()
    give_back_memory()
    give_back_memory()
    after = _libc_function.cache_info()
    assert after.misses == before.misses  # no ``ldconfig -p`` per customer
    assert after.hits == before.hits + 2


def test_one_touch_provider_with_the_panel_as_mounted():

    assert input_providers("mouse", "", 90, True) == {"mouse": "mouse,disable_multitouch"}
    assert input_providers("hidinput", "/dev/input/event3") == {
        "touch": "hidinput,/dev/input/event3"
    }
    assert input_providers("mtdev", "/dev/input/event3", 270, False, True) == {
        "touch": "mtdev,/dev/input/event3,rotation=270,invert_y=1"
    }
    assert input_providers("probesysfs", "", 90, True) == {
        "touch": "probesysfs,provider=hidinput,select_all=0,param=rotation=90,param=invert_x=1"
    }
    with pytest.raises(ValueError, match="touch_device"):
        input_providers("hidinput", "")
