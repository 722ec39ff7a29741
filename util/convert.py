"""`python -m util.convert`: the command; the code is util/data/convert.py (dataset formats) and
util/data/rosbag_set.py (`python -m util.convert rosbag`: an unlabeled set from a ROS bag)."""
import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["rosbag"]:
        from util.data.rosbag_set import main

        sys.exit(main(sys.argv[2:]))
    from util.data.convert import main

    sys.exit(main())
