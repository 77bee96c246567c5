import sys

from whk.cli import main

sys.exit(main())
