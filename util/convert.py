"""`python -m util.convert`: the command; the code is util/data/convert.py (its sub-commands pst900, fmb,
folders and rosbag, the last in util/data/bag_convert.py)."""
import sys

if __name__ == "__main__":
    from util.data.convert import main

    sys.exit(main())
