"""`python -m util.convert`: the command; the code is util/data/convert.py."""
import sys

from util.data.convert import main

if __name__ == "__main__":
    sys.exit(main())
