"""The SLUB laboratory: a tool tier over the facade and ``numslab.jit``.

It reads real kernel ``kmem`` traces, replays them through numslab's SLUB, records traces and slab
snapshots."""
