"""Tier 3, the facade: ``SlabAllocator``, ``KmemCache`` and the batch API.

They validate and convert their arguments, call the engine through the drivers and turn error codes
into exceptions."""
