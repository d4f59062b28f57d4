# Sphinx configuration for nodepool's documentation.
#
# Plain prose only: no autodoc, so building the docs never imports nodepool
# or its cloud SDKs (tox -e docs installs Sphinx alone).
project = "nodepool"
copyright = "Nodepool contributors"
extensions = []
master_doc = "index"
html_theme = "alabaster"
exclude_patterns = []
highlight_language = "none"
