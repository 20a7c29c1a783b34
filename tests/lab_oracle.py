"""A plain-Python oracle of a kmem trace, independent of numslab's parser and replay: each
line read with ``str.split``, a dict of live pointers, the replay's documented rules."""
from __future__ import annotations

import lzma
import re
from collections import Counter
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
#: real traces committed for the tests (recorded on this project's machine)
TRACES = {
    "git_tar": "kmem_git_tar.txt.xz",         # tracefs trace, git + tar + Python
    "net": "kmem_net.txt.xz",                 # tracefs trace, network-heavy load
    "file": "kmem_file.txt.xz",               # tracefs trace, file-heavy load
    "perf": "kmem_perf_script.txt.xz",        # perf script of the kmem events
    "trace_cmd": "kmem_trace_cmd_report.txt.xz",  # trace-cmd report
}
SNAPSHOTS = {"git_tar": "kmem_snapshot_git_tar.json.xz", "net": "kmem_snapshot_net.json.xz"}
KMALLOC = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)


def text(name: str) -> str:
    """The decompressed text of a committed trace."""
    return lzma.decompress((DATA / TRACES[name]).read_bytes()).decode()


def _kmalloc_cache(nbytes: int, gfp: str) -> str | None:
    """The kmalloc cache of a kmalloc event of ``nbytes`` requested (``bytes_req``, as the
    kernel's ``kmalloc_slab`` picks it), None for whole pages or kmalloc(0)."""
    if nbytes == 0 or nbytes > 8192:
        return None
    size = next(s for s in KMALLOC if s >= nbytes)
    s = f"{size // 1024}k" if size >= 1024 else str(size)
    names = set(gfp.split("|"))
    if "__GFP_DMA" in names or "GFP_DMA" in names:
        return f"dma-kmalloc-{s}"
    if "__GFP_RECLAIMABLE" in names:
        return f"kmalloc-rcl-{s}"
    if "__GFP_ACCOUNT" in names or "GFP_KERNEL_ACCOUNT" in names:
        return f"kmalloc-cg-{s}"
    return f"kmalloc-{s}"


#: ``call_site`` of the slab allocator's own kmallocs, the name whole
_OWN_SITE = re.compile(r"(alloc_slab_obj_exts|alloc_empty_sheaf|__alloc_empty_sheaf"
                       r"|init_kmem_cache_nodes|cache_random_seq_create)(?![A-Za-z0-9_])")


class Oracle:
    """Walk a trace's lines; ``live`` counts each cache's live objects."""

    def __init__(self) -> None:
        self.live_ptr: dict[str, str | None] = {}     # pointer -> cache (None: pages)
        self.live: Counter[str] = Counter()
        self.lines = 0                                # event lines (not comments)
        self.replayed = 0
        self.skipped: Counter[str] = Counter()
        self.untraced_frees = 0
        self.large_at: dict[str, tuple] = {}          # live large kmalloc -> (cpu, sizes)
        self.cpu_last: dict[str, tuple] = {}          # CPU -> its last event's (ptr, sizes)
        self.untraced_by_cache: Counter[str] = Counter()  # (slab caches: not pages)
        self.zero_ptrs = {"0x10", "0000000000000010"}

    def _free(self, ptr: str) -> None:
        self.large_at.pop(ptr, None)
        cache = self.live_ptr.pop(ptr)
        if cache is not None:
            self.live[cache] -= 1

    def line(self, ln: str) -> None:
        """Account for one line of the text."""
        s = ln.strip()
        if not s or s.startswith("#") or s.startswith("cpus="):
            return
        self.lines += 1
        if s.startswith("CPU:"):
            self.skipped["lost_events_line"] += 1
            return
        toks = s.split()
        ev = None
        for i, t in enumerate(toks):
            if t.endswith(":") and t[:-1].replace(".", "", 1).isdigit() and "." in t:
                ev = next(u for u in toks[i + 1:] if u.endswith(":"))[:-1].split(":")[-1]
                cpu = next((u for u in toks[:i] if u.startswith("[")), "")
                break
        f = dict(t.split("=", 1) for t in toks if "=" in t)
        if ev is not None:
            last = self.cpu_last.get(cpu)
            self.cpu_last[cpu] = (ev, f.get("ptr"), f.get("bytes_req"), f.get("bytes_alloc"))
        if ev == "kmalloc" and _OWN_SITE.match(f.get("call_site", "")):
            self.skipped["kernel_own"] += 1     # the slab allocator's own: a memcg vector, a
            return                              # sheaf (the replay's allocator makes its own)
        if ev in ("kmem_cache_alloc", "kmalloc"):
            ptr = f["ptr"]
            if ptr in ("(null)", "(nil)") or int(ptr, 16) == 0:
                self.skipped["failed_alloc"] += 1
                return
            nbytes = int(f["bytes_alloc"])
            req = int(f.get("bytes_req", nbytes))
            if ev == "kmalloc" and (nbytes == 0 or req == 0):
                self.zero_ptrs.add(ptr)
                self.skipped["zero_size_alloc"] += 1
                return
            if ev == "kmalloc" and req > 8192 and ptr in self.large_at \
                    and last == self.cpu_last[cpu] and self.large_at[ptr] == cpu:
                self.skipped["large_kmalloc_twice"] += 1    # __do_kmalloc_node traces
                return                                      # it twice
            if ptr in self.live_ptr:
                if self.live_ptr[ptr] is not None:
                    self.untraced_by_cache[self.live_ptr[ptr]] += 1
                self._free(ptr)
                self.untraced_frees += 1
            cache = f["name"] if ev == "kmem_cache_alloc" else \
                _kmalloc_cache(req, f.get("gfp_flags", ""))
            self.live_ptr[ptr] = cache
            if cache is not None:
                self.live[cache] += 1
            elif ev == "kmalloc":
                self.large_at[ptr] = cpu
            self.replayed += 1
        elif ev in ("kfree", "kmem_cache_free"):
            ptr = f["ptr"]
            if ptr in ("(null)", "(nil)") or int(ptr, 16) == 0:
                self.skipped["null_free"] += 1
            elif ptr in self.zero_ptrs:
                self.skipped["zero_size_ptr_free"] += 1
            elif ptr not in self.live_ptr:
                self.skipped["untraced_alloc"] += 1
            else:
                self._free(ptr)
                self.replayed += 1
        else:
            self.skipped["other_event"] += 1


def live_at(trace_text: str, lines: list[int]) -> list[Counter[str]]:
    """The oracle's live objects per cache after each of ``lines`` (1-based line numbers,
    ascending), and the final oracle as the last element's ``.oracle``."""
    out = []
    o = Oracle()
    want = iter(lines)
    nxt = next(want, None)
    for k, ln in enumerate(trace_text.split("\n"), 1):
        o.line(ln)
        while nxt is not None and k == nxt:
            out.append(Counter(o.live))
            nxt = next(want, None)
    live_at.oracle = o          # type: ignore[attr-defined]
    return out
