"""``python -m numslab``: the command line (:mod:`numslab.tools.cli`).

As the ``numslab`` script runs it."""
import sys

from .tools.cli import main

sys.exit(main())
