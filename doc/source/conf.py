# Sphinx configuration for nodepool's documentation.
project = "nodepool"
copyright = "Nodepool contributors"
extensions = []
master_doc = "index"
html_theme = "alabaster"
exclude_patterns = []
