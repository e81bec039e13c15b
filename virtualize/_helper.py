"""The helper process of :mod:`virtualize.isolation`: ``python -m virtualize._helper FD``."""

import sys

from virtualize.isolation import serve

if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
