"""Evaluate CENet, the RGB-thermal teacher, on MFNet splits (report, speed, pictures). See `--help`."""
from util.demo import main_for


def main(argv=None):
    return main_for("CENet", argv)


if __name__ == "__main__":
    main()
