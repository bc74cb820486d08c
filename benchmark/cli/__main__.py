"""``python -m benchmark.cli``: the ``zoobench`` command."""

import sys

from benchmark.cli.app import main

sys.exit(main())
