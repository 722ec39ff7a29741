"""Distil EKNet, the thermal-only CEKD student, from a CENet teacher. See `--help` and README.md."""
from util.training import main_for


def main(argv=None):
    return main_for("student", argv)


if __name__ == "__main__":
    main()
