"""The result cache's store: each text scored once per scoring identity, shared by shards and runs
(docs/cache.md). The scoring core's cache step (scoring/cache_step.py) looks texts up in it and adds to it."""

from .store import ResultCache

__all__ = ["ResultCache"]
