"""`python -m cli ...`: the same as the `corral` command."""

import sys

from cli.main import main

sys.exit(main())
