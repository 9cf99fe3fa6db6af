"""Falsification: finding inputs that violate the property."""
