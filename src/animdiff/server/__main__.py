"""`python -m animdiff.server --models-dir DIR ...`: the server without the main CLI."""

import sys

from animdiff.server.cli import main

sys.exit(main())
