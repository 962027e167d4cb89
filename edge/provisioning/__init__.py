"""Provisioning: pairing a blank device with HQ, enrolment bundles, re-provisioning."""
