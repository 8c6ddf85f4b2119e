"""CycleGAN and pix2pix: networks, training with exact resume, and translation of any image size.

The modules are small and independent (networks, losses, pool, data, precision, checkpoint, trainer,
translate, weights). Importing this package imports nothing heavy; each module imports torch itself, so
the torch-free parts (dataset ingest lives in :mod:`core.datasets`) stay usable from the web process.
"""
