"""Converters: one module per model family turning an original checkpoint into a Hub-ready folder (a function
`convert` plus `main` for the command line), and the independent reference implementations they check against.

`hf-iqa convert <family>` runs `hf_iqa.converters.<family>.main`; the scripts `conversion/convert_<family>.py` at
the top of the repository are thin wrappers over the same function, so an installed wheel converts too.
"""
