"""`python -m controller`: the same as the `controller` command."""

import sys

from controller.cli import main

sys.exit(main())
