"""``python -m numslab``: the command line (:mod:`numslab.tools.cli`), as the ``numslab``
script runs it."""
import sys

from .tools.cli import main

sys.exit(main())
