"""Tools beside the library: the benchmark workloads and peers (``bench``, shared with the asv
suite) and the ``numslab`` command line (``cli``)."""
