"""``python -m jobs`` runs the ``mobility`` command line."""

from jobs.cli import main

main()
