"""Training data for the licence-plate detector: synthetic scenes and the real labelled set."""
