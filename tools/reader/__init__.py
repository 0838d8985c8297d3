"""Training tools for the plate reader (the `train` extra; never imported by the node)."""
