"""Sphinx configuration: MyST Markdown pages, built in CI with warnings as errors."""

project = "jobqueue"
author = "jobqueue developers"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
master_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
myst_heading_anchors = 3
