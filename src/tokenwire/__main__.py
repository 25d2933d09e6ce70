"""``python -m tokenwire`` runs the command line."""

from tokenwire.cli import main

main()
