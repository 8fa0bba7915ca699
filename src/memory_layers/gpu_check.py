"""`python -m memory_layers.gpu_check`: the memory ops on a GPU at the real shapes, PASS or FAIL per check; the
program is :mod:`memory_layers.tools.gpu_check`."""
import sys

from .tools.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
