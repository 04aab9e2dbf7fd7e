"""``python -m geotiler`` runs the CLI."""

from geotiler.cli import main

main()
