"""Sphinx configuration of the dataval documentation."""

import sys
from pathlib import Path

import dataval

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_figures  # noqa: E402

if make_figures.stale():
    make_figures.main()

project = "dataval"
author = "dataval developers"
copyright = "2026, dataval developers"
version = release = dataval.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
]
autosummary_generate = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
autodoc_default_options = {
    "members": True,
    "inherited-members": True,
    # scikit-learn's metadata-routing helpers point to its own docs
    "exclude-members": ",".join(
        ["get_metadata_routing"]
        + [
            f"set_{method}_request"
            for method in (
                "fit",
                "score",
                "predict",
                "predict_proba",
                "transform",
                "fit_resample",
                "split",
                "decision_function",
                "partial_fit",
                "top_k",
                "value",
            )
        ]
    ),
}
templates_path = ["_templates"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
intersphinx_mapping = {}
nitpicky = False
