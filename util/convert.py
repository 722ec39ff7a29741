"""`python -m util.convert`: the command; the code is util/data/convert.py (dataset formats) and
util/deploy/bag_dataset.py (`python -m util.convert rosbag`: an unlabeled set from a ROS bag)."""
import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["rosbag"]:
        from util.deploy.bag_dataset import main

        sys.exit(main(sys.argv[2:]))
    from util.data.convert import main

    sys.exit(main())
