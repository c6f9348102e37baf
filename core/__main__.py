"""`python -m dacflow` runs the command line."""

from .cli.main import main

main()
