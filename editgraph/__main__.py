"""``python -m editgraph``: the same command as the ``editgraph`` script."""

from .cli import main

if __name__ == "__main__":
    main()
