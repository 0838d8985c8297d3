"""Tools for building and training the plate models (never imported by the node)."""
