"""How a use case's runs end in MLflow: one ``with`` block around the work they record."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from raynas.errors import SearchInterrupted
from raynas.runtime import stderr
from raynas.tracking.tracker import SearchRecord

PARENT = "parent"


@contextlib.contextmanager
def tracking_session(record: SearchRecord, runs: Sequence[str] = (PARENT,), *,
                     wait_s: float = 120.0,
                     progress: Callable[[str], None] = stderr) -> Iterator[SearchRecord]:
    """The runs a use case opened (``runs``: a search's or a supernet's parent, a retrain's
    run per architecture, a specialisation's child) for the length of the block. Those still
    running at its end are ended FINISHED, KILLED when it is interrupted (``SearchInterrupted``:
    a search that ``--resume`` finishes), FAILED on any other exception; then the pending
    writes are applied and the folder copied to its storage. Only a block that succeeded waits
    (up to ``wait_s``) for an unreachable store: what it leaves waits for ``raynas sync``."""
    status = "FINISHED"
    try:
        yield record
    except SearchInterrupted:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        ledger = record.ledger
        for key in runs:  # a run the block never created is not ended
            if ledger.has(key) and ledger.status.get(key, "RUNNING") == "RUNNING":
                record.end(key, status)
        if pending := record.settle(wait_s if status == "FINISHED" else 0):
            progress(f"warning: MLflow is unreachable; {pending} writes wait in "
                     f"{ledger.folder}: run raynas sync {ledger.folder}")
