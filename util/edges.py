"""`python -m util.edges`: the command; the code is util/data/edges.py."""
import sys

from util.data.edges import main

if __name__ == "__main__":
    sys.exit(main())
