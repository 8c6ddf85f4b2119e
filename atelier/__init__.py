"""The ``atelier`` command: the composition root that wires core, web and worker together."""
