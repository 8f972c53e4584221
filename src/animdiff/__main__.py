"""`python -m animdiff`: the same command as `animdiff`."""

import sys

from animdiff.cli import main

sys.exit(main())
