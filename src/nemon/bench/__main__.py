"""``python -m nemon.bench``: see :mod:`nemon.bench`."""

from .cli import main

if __name__ == "__main__":
    main()
