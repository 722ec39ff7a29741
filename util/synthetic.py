"""`python -m util.synthetic`: the command; the code is util/data/synthetic.py (the frames: util/data/scene.py)."""
import sys

from util.data.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
