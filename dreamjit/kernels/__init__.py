"""Numba kernels: flat arrays in, flat arrays out, no validation (the object layer validates)."""
