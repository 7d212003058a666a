"""Former name of :mod:`analysis.io`, kept until its last importers move (remove at the merge)."""

from .io import (  # noqa: F401
    DataError,
    atomic_write_bytes,
    atomic_write_text,
    load_array,
    save_figure,
    to_jsonable,
    write_csv,
    write_json,
)
