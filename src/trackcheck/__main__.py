"""``python -m trackcheck`` is the ``trackcheck`` command."""

from trackcheck.cli import main

main()
