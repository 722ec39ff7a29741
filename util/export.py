"""`python -m util.export`: the command; the code is util/deploy/export.py."""
from util.deploy.export import main

if __name__ == "__main__":
    main()
