"""Train CENet, the RGB-thermal CEKD teacher (CE + edge loss). See `--help` and README.md."""
from util.training import main_for


def main(argv=None):
    return main_for("teacher", argv)


if __name__ == "__main__":
    main()
