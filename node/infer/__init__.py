"""Plate detection on the node: the TFLite runtime wrapper, pre/post-processing and the
bundled models with their model cards (issue 3; nothing here runs yet)."""
