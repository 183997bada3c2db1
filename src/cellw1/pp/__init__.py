"""cellw1.pp."""
