"""Sphinx configuration of the volume_image documentation.

Built with ``sphinx-build -W`` by the test command: a warning (a broken
reference, a missing docstring target) fails the build.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))

project = "volume_image"
copyright = "volume_image contributors"
author = "volume_image contributors"

extensions = [
    "sphinx.ext.autodoc",
    "oslo_config.sphinxext",
    "oslo_config.sphinxconfiggen",
    # the openstack plugin's commands, from their own parsers (cliff comes
    # with the test extra, through osc-lib)
    "cliff.sphinxext",
    "volume_image_docs",
]

autoprogram_cliff_application = "openstack"
# the formatter options are the same on every openstack command
autoprogram_cliff_ignored = [
    "--help",
    "--format",
    "--column",
    "--noindent",
    "--prefix",
    "--max-width",
    "--fit-width",
    "--print-empty",
    "--quote",
    "--sort-column",
    "--sort-ascending",
    "--sort-descending",
]

# oslo_config.sphinxconfiggen: writes _static/volume_image.conf.sample from
# the code's list_opts at each build
config_generator_config_file = [
    ("../volume_image-config-generator.conf", "_static/volume_image"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False

exclude_patterns = ["_build", "*.inc"]
templates_path: list[str] = []
html_theme = "alabaster"
html_static_path = ["_static"]
html_title = "volume_image"
html_theme_options = {
    "description": "Cinder volumes to Glance multi-store images",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
smartquotes = False  # messages are shown verbatim
