"""cellw1's benchmarks: ``python -m benchmarks`` lists them, ``python -m benchmarks NAME --help`` explains one.

Each module is one benchmark with a ``main(argv)``; what they share (data sets, options, the
seed loop, the result writer, tables) is in :mod:`benchmarks._common`. The package is not part
of the library: run it from the repository root.
"""
