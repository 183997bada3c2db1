"""cellw1.io."""
