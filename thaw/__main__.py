"""``python -m thaw``: the same as the ``thaw`` command."""

from thaw.cli import main

main()
