"""``python -m segdend`` runs the command-line tool."""

from segdend.cli import main

main()
