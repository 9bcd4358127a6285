"""Command-line interface (``medlens``). Commands live in small modules by area."""
