"""Applications as plug-ins: one folder per task type, each registering its task, data
sources, model builders, metrics and benchmarks on import (the ``raynas.plugins`` entry points
in ``pyproject.toml``). The core layers never import them."""
