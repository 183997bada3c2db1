"""cellw1.parallel."""
