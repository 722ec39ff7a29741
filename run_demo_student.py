"""Evaluate EKNet, the thermal-only student, on MFNet splits, or segment your own thermal
frames with `--input PATH`. See `--help`."""
from util.demo import main_for


def main(argv=None):
    return main_for("EKNet", argv)


if __name__ == "__main__":
    main()
