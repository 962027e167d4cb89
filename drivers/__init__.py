"""Hardware library: one interface per device kind, real backends and simulators."""
