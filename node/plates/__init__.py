"""Plate numbers on the node: grammar (validate, format), fusion of a track's reads, hotlist."""
