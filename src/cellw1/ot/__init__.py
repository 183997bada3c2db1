"""cellw1.ot."""
