"""`python -m jobqueue ...` is the `jobqueue` command."""

from .cli import main

if __name__ == "__main__":
    main()
