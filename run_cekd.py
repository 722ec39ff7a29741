"""The whole CEKD pipeline in one command: data, teacher, student, baseline, comparison.

    python run_cekd.py               # synthetic data, a few minutes on a CPU
    python run_cekd.py --help        # the paper's settings: see README.md
"""
from util.pipeline import main

if __name__ == "__main__":
    main()
