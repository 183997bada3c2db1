"""cellw1's version (one place; the top package and saved files read it)."""

__version__ = "0.1.0"
