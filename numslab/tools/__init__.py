"""Tools beside the library: benchmarks and measures, the ``numslab`` command line, ``prewarm``.

The benchmark workloads, peers and measures (``bench``, shared with the asv suite; ``singlebench``,
``floor``, ``checkfloor``, ``coldstart``), the ``numslab`` command line (``cli``, ``labcli``) and
``prewarm``, the second process that compiles units."""
