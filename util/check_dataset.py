"""`python -m util.check_dataset`: the command; the code is util/data/check.py."""
import sys

from util.data.check import main

if __name__ == "__main__":
    sys.exit(main())
