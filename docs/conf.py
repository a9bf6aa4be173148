"""Sphinx configuration: the user guide (Markdown, MyST) and the API reference (autodoc)."""

import os
import sys
import tempfile
from pathlib import Path

# import the package from this checkout; fastplotlib renders offscreen while autodoc imports it
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RENDERCANVAS_FORCE_OFFSCREEN", "1")
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

project = "mesmerize_widgets"
author = "mesmerize_widgets contributors"
copyright = "the mesmerize_widgets contributors"
release = "0.1.0"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# ipywidgets' and traitlets' own members are not part of our API
autodoc_inherit_docstrings = False
nitpicky = False

html_theme = "furo"
html_title = "mesmerize_widgets"
