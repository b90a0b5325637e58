"""Run the command line interface: ``python -m kerasmuscle``."""

from kerasmuscle.cli import main

if __name__ == "__main__":
    main()
