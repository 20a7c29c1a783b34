"""Snapshot a real kernel's SLUB geometry from /sys/kernel/slab into a CSV test oracle.

Run as root on a Linux machine: ``python tests/data/dump_kernel_slab.py > tests/data/kernel_slab.csv``.
Only real caches are listed (the alias symlinks are skipped); ``nr_cpus`` is the kernel's
present-CPU count, which is what ``calculate_order`` used.
"""
import os
import platform
import sys

FIELDS = ["object_size", "slab_size", "align", "order", "objs_per_slab", "min_partial",
          "cpu_partial", "ctor", "destroy_by_rcu", "hwcache_align", "reclaim_account",
          "cache_dma", "poison", "red_zone", "store_user", "sanity_checks", "sheaf_capacity",
          "aliases"]


def main(root: str = "/sys/kernel/slab") -> None:
    present = open("/sys/devices/system/cpu/present").read().strip()
    ncpu = sum(int(b) - int(a) + 1 if "-" in r else 1
               for r in present.split(",") for a, _, b in [r.partition("-")])
    w = sys.stdout.write
    w(f"# kernel {platform.release()}, nr_cpus {ncpu}\n")
    w(",".join(["name", "nr_cpus"] + FIELDS) + "\n")
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.islink(path):
            continue
        vals = []
        for f in FIELDS:
            try:
                v = open(os.path.join(path, f)).read().strip()
            except OSError:
                v = ""
            if f == "ctor":
                v = "1" if v else "0"
            vals.append(v.split()[0] if v else "0")
        w(",".join([name, str(ncpu)] + vals) + "\n")


if __name__ == "__main__":
    main()
