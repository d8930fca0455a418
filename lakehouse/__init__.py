"""The lakehouse: table catalog, Delta storage gateway and DuckDB query layer."""

from lakehouse.catalog import TABLES, TableSpec
from lakehouse.errors import InputError, MobilityError, StorageError
from lakehouse.settings import Settings, get_settings
from lakehouse.storage import Lake

__all__ = [
    "TABLES",
    "InputError",
    "Lake",
    "MobilityError",
    "Settings",
    "StorageError",
    "TableSpec",
    "get_settings",
]
