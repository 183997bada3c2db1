"""The ``cellw1`` command line: one small module per verb (see :mod:`cellw1.cli.main`)."""
