"""cellw1.pl."""
