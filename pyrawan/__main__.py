"""``python -m pyrawan`` (also what ``torchrun -m pyrawan`` runs)."""
from pyrawan.cli import main

main()
