"""The `whk` command line: the composition root that knows every WHK application.

`whk` (the core) never imports `api` or `dispatcher`; this package may import all three, and nothing
imports it. `whk_cli.main:main` is the `whk` console script; `python -m whk` runs it too.
"""
