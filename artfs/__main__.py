"""`python -m artfs` is the `artfs` command."""

from artfs.cli import main

main()
