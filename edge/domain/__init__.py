"""Pure membership rules: no I/O; clocks and ids are injected."""
