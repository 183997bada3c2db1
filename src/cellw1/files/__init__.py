"""cellw1's own files and safe writing: model files, atomic writes, output checks, directory locks.

Beside :mod:`cellw1.io`, which reads and writes cells (AnnData, h5ad, zarr), this package holds
the low-level file helpers every layer may use, the OT engine included:

- :mod:`~cellw1.files.outputs`: an output path checked before any work, and write failures
  named plainly (:class:`~cellw1.errors.OutputError`);
- :mod:`~cellw1.files.atomic`: atomic writes (a reader sees the old file or the new one);
- :mod:`~cellw1.files.model_files`: safetensors model files with a JSON header, checksums and
  format versions (no pickle);
- :mod:`~cellw1.files.lock`: an advisory lock on an output directory.
"""
