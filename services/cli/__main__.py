"""`python -m services.cli`: the command line."""

import sys

from services.cli import main

sys.exit(main())
