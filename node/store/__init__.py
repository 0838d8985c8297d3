"""The offline packet store (issue 5): sealed packets kept safe until the central acks them."""

from __future__ import annotations

from node.store.store import CheckReport, Claimed, PacketStore, StoreBusy, StoreError, StoreFull

__all__ = ["CheckReport", "Claimed", "PacketStore", "StoreBusy", "StoreError", "StoreFull"]
