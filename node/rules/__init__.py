"""Violations: plate tracking, zone geometry, the signal phase, and the rules."""
