"""The SLUB laboratory (a tool tier over the facade and ``numslab.jit``): read real kernel
``kmem`` traces, replay them through numslab's SLUB, record traces and slab snapshots."""
