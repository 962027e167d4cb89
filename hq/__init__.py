"""Reference HQ service: central ledger, fleet monitor and lane simulator."""
