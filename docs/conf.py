"""Sphinx configuration of the dreamjit documentation.

Build (offline, warnings are errors), from the repository root::

    pip install ".[docs]"
    python -m sphinx -W -b html docs docs/_build/html

The notebooks in ``docs/notebooks/`` are MyST markdown notebooks without
outputs; myst-nb executes every one of them on each build.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

import dreamjit  # noqa: E402

project = "dreamjit"
author = "dreamjit developers"
copyright = "dreamjit developers"
version = release = dreamjit.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_nb",
    "dreamjit_api",  # docs/_ext/dreamjit_api.py: the API reference from dreamjit.__all__
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "jupyter_execute"]
templates_path = []

# -- HTML ---------------------------------------------------------------------
html_theme = "alabaster"  # ships with Sphinx: no download, builds offline
html_title = f"dreamjit {release}"
html_static_path = []
html_theme_options = {
    "description": "A Numba-JIT, memory-bounded pool of scored tensors",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}

# -- autodoc / autosummary / numpydoc ----------------------------------------
autodoc_typehints = "none"          # numpydoc sections carry the types
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autosummary_generate = False        # summary tables link to the entries on the same page
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# -- myst / myst-nb: execute every notebook on every build ---------------------
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True         # a failing cell prints its traceback in the build log
nb_execution_timeout = 300          # seconds per cell
nb_execution_excludepatterns = []
nb_merge_streams = True
nb_kernel_rgx_aliases = {".*": "python3"}
