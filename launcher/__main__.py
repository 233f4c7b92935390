"""`python -m launcher` is `mpidock`."""

import sys

from launcher.cli import main

sys.exit(main())
