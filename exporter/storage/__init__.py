"""The state store: AI state, source cursors and the push write-ahead log (``store.py``)."""

from exporter.storage.files import StorageLockedError
from exporter.storage.store import Participant, Replayable, State, StateStore
from exporter.storage.wal import StorageUnavailableError, WalRecord

__all__ = ["Participant", "Replayable", "State", "StateStore", "StorageLockedError",
           "StorageUnavailableError", "WalRecord"]
