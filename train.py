"""`python train.py model=ultimus optimizer=adam epochs=2`: eva's command line in a clone.

The same as `python -m eva ...` (eva/cli/main.py).
"""

from eva.cli.main import main

if __name__ == "__main__":
    main()
