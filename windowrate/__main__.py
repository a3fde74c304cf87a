"""Run the `windowrate` command with `python -m windowrate`."""

from windowrate.cli import main

main()
