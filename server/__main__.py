"""`python -m server serve|bootstrap`: the server, without the client's command line."""

import sys

from server.cli import main

sys.exit(main(sys.argv[1:]))
