"""`python -m hio_http`: the same as the `hio-http` command."""

import sys

from .cli import main

sys.exit(main())
