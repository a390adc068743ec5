"""`python -m eva ...`: the command line of an installed eva (see eva/cli/main.py)."""

from eva.cli.main import main

main()
