"""`python -m toolken` runs the `toolken` command line."""
import sys

from .cli import main

sys.exit(main())
