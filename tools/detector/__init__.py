"""Plate detector training and int8 export (`train` extra; never imported by the node)."""
