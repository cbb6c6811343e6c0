"""``thaw ...`` in the test process: what the tests use instead of the modules' old ``main(argv)`` functions."""

from __future__ import annotations

from thaw.cli import app


def thaw(*args: str) -> int:
    """Runs ``thaw ARGS`` in this process and returns 0; a usage error or a failing command raises its ``SystemExit``.

    Output goes to the real ``sys.stdout`` / ``sys.stderr`` (``capsys`` sees it); exceptions of the command propagate.
    """
    try:
        app(list(args), prog_name="thaw")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    return 0
