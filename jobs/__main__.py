"""``python -m jobs`` runs the ``mobility`` command line."""

from jobs.cli import main

# guarded: a worker process of the local engine (spawn) imports this module again
if __name__ == "__main__":
    main()
