"""The ``thaw`` commands, one module per command group; :mod:`thaw.cli` assembles them into the root command."""
