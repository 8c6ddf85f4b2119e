"""ML engines. They take tensors/images and options and report through :mod:`core.engines.progress`.

Engines know nothing about jobs, databases or storage, so they run the same from the CLI, a test,
a notebook or a worker.
"""
