"""`python -m memory_layers.bench`: one memory layer's read-out paths timed against the MLP it replaces; the program is
:mod:`memory_layers.tools.bench`."""
import sys

from .tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
