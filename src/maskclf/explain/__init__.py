"""Activation maps: the maths of a map (cam) and the maps of a run (explain, reports)."""
