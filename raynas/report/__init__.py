"""Pictures of a search: architecture diagrams (``graph``, ``diagram``), the per-trial diagram and
tags (``trial``), the parent run's report (``search``) and structural diffs (``compare``)."""
