"""`python -m whk`: the same as the `whk` console script (the CLI lives in the composition root `whk_cli`)."""

import sys

from whk_cli.main import main

sys.exit(main())
