"""asv benchmarks of dreamjit, with its peers side by side (see ``common.py``)."""
