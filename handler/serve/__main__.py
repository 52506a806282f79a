"""``python -m handler.serve``: see handler/serve/cli.py."""

import sys

from handler.serve.cli import main

sys.exit(main())
