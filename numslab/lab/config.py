"""The replay's configurations: a machine to replay on, parsed from ``--compare``'s words.

:class:`Config` and :func:`parse_config` (kernel generation, CPUs, nodes, policy, ``every``, warm
start, the slab order's boot parameters), with the checks of each word.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Any

from ..engine.layout import RSEQ_MAX
from ..errors import InvalidArgumentError as BadArg, SlabError, WrongTypeError
from ..geometry import SlabOrders, boot_orders, calculate_order, order_objects
from . import kernels as K
from . import policies
from . import warm as W

#: The configuration words of the slab order's boot parameters (SlabAllocator's arguments).
BOOT_WORDS = ("slab_min_order", "slab_max_order", "slab_min_objects")
#: SlabAllocator's largest ``nr_cpus``.
MAX_CPUS = 4096
#: SlabAllocator's largest ``nr_nodes``.
MAX_NODES = 64

KERNELS = ("6.18", "7.0", "7.1", "7.3", "next")
#: ``default``: the generation's own rules; ``sheaves=N``: every cache the trace uses, but
#: numslab's own kmalloc caches, gets sheaves of at least N objects (under 6.18 the opt-in
#: ``sheaf_capacity``; under 7.0 a minimum); ``nosheaves``: 6.18 without the sheaves a
#: snapshot gives some caches (7.0 keeps its own: every cache has them).
POLICIES = ("default", "sheaves=N", "nosheaves") + policies.REMEDIES
#: ``Config.every`` for work after a free, when it would free a slab (``every=free``)
EVERY_FREE = -1


@dataclass(frozen=True)
class Config:
    """One simulated machine to replay on: SLUB generation, CPUs, nodes and policy."""

    kernel: str = "7.0"
    cpus: int = 2
    nodes: int = 1
    policy: str = "default"
    #: a remedy's work (``shrink``, ``mobility``) every this many events; 0: at the
    #: sample points; ``EVERY_FREE`` (-1, ``every=free``): per cache, after each free that
    #: leaves the cache a slab more than its live objects need (``kernels._free_trigger``);
    #: sample points (after each sample is taken)
    every: int = 0
    #: start from the snapshot's live objects, slabs and partial slabs (:mod:`numslab.lab.warm`),
    #: the order untraced frees take them in: ``slab`` (``:warm``) or ``random``
    #: (``:warm=random``); ``""``: from empty caches
    warm: str = ""
    #: the slab order's boot parameters (``slab_min_order``, ``slab_max_order``,
    #: ``slab_min_objects``), as :func:`numslab.geometry.boot_orders` leaves them
    orders: tuple[int, int, int] = (0, 3, 0)

    @property
    def name(self) -> str:
        """The configuration as ``--compare`` spells it, e.g. ``7.0``, ``6.18:cpus=4``.

        Or ``7.0:sheaves=32``. Parts at their default for the trace are left out by the caller."""
        parts = [self.kernel, f"cpus={self.cpus}"]
        if self.nodes != 1:
            parts.append(f"nodes={self.nodes}")
        if self.policy != "default":
            parts.append(self.policy)
        if self.every:
            parts.append("every=free" if self.every == EVERY_FREE else f"every={self.every}")
        if self.warm:
            parts.append("warm" if self.warm == "slab" else f"warm={self.warm}")
        parts += [f"{w}={v}" for w, v, d in zip(BOOT_WORDS, self.orders, (0, 3, 0)) if v != d]
        return ":".join(parts)


def _policy(text: str) -> str:
    """Check a policy name (:data:`POLICIES`) or remedies joined by ``:``; spell it canonically.

    E.g. ``sorted:mobility=100``; the canonical spelling is :func:`policies.combine`'s."""
    if not isinstance(text, str):
        raise WrongTypeError(f"policy {text!r} is not a str")
    if ":" in text:
        remedies = [_remedy(w) for w in text.split(":") if w.strip()]
        if not remedies:                        # (":" was a policy '', "7.0:cpus=2:")
            raise BadArg(f"policy {text!r} names no remedy")
        return policies.combine(remedies)
    if text in ("default", "nosheaves"):
        return text
    remedy = policies.check(text)
    if remedy is not None:
        return remedy
    if text.startswith("sheaves="):
        n = text.split("=", 1)[1]
        if n.isdecimal() and 0 < int(n) <= 4096:
            return f"sheaves={int(n)}"
    raise BadArg(f"policy {text!r} is not one of {', '.join(POLICIES)} (N in 1..4096)")


def _remedy(text: str) -> str:
    """Check one word of a remedy combination.

    A remedy, not ``default``, ``sheaves=N`` or ``nosheaves``."""
    word = _policy(text.strip())
    if policies.check(word) is None:
        raise BadArg(f"policy {word!r} does not combine with other policies (only the "
                     f"remedies do: {', '.join(policies.REMEDIES)})")
    return word


def parse_config(text: str, base: Config) -> Config:
    """Parse ``KERNEL[:cpus=N][:nodes=N][:POLICY...][:every=N]`` into a :class:`Config`.

    Any part may be left out; ``base`` fills it; remedies combine, one of each kind. E.g. ``6.18``,
    ``7.0:cpus=8``, ``7.0:sheaves=64``, ``7.0:mobility=100:every=3000`` (the remedy's work every
    3,000 events rather than at the sample points), ``6.18:mobility=100:every=free`` (a cache's
    compaction after each free that leaves it a slab more than its live objects need)."""
    kernel, cpus, nodes, policy, every = base.kernel, base.cpus, base.nodes, base.policy, \
        base.every
    warm = base.warm
    boot: dict[str, int | None] = dict.fromkeys(BOOT_WORDS)     # (the words given only)
    if not isinstance(text, str):
        raise WrongTypeError(f"configuration {text!r} is not a str")
    chosen: list[str] = []
    starts: list[str] = []
    given: dict[str, tuple[str, Any]] = {}

    def once(key: str, part: str, value: Any) -> Any:
        """``value``, refusing a second word of ``key`` that says otherwise.

        Such as ``6.18:7.0`` or ``cpus=2:cpus=8``: the last one won, silently."""
        if key in given and given[key][1] != value:
            raise BadArg(f"configuration {text!r}: {given[key][0]!r} and {part!r}: one "
                         f"{'kernel' if key == 'kernel' else key + '=N'} a configuration")
        given[key] = (part, value)
        return value

    for part in [p.strip() for p in text.split(":") if p.strip()]:
        if part in KERNELS:
            kernel = once("kernel", part, part)
        elif part.startswith("cpus=") and part[5:].isdecimal() and int(part[5:]) >= 1:
            cpus = once("cpus", part, int(part[5:]))
        elif part.startswith("nodes=") and part[6:].isdecimal() and int(part[6:]) >= 1:
            nodes = once("nodes", part, int(part[6:]))
        elif part.startswith("every=") and part[6:].isdecimal():     # 0: the sample points
            every = once("every", part, int(part[6:]))
        elif part == "every=free":
            every = once("every", part, EVERY_FREE)
        elif part.split("=")[0] in BOOT_WORDS and part.split("=", 1)[1:] != [""] \
                and part.split("=", 1)[-1].isdecimal():
            word, v = part.split("=", 1)
            boot[word] = once(word, part, int(v))
        elif part == "cold" or part == "warm" or part.startswith("warm="):
            if starts:                      # one start a configuration: the last one won
                raise BadArg(f"configuration {text!r}: {starts[0]!r} and {part!r}: one "
                             f"start, warm (warm=slab or warm=random) or cold")
            starts.append(part)
            if part == "cold":
                warm = ""
            elif part[5:] not in ("", *W.ORDERS) or part == "warm=":
                raise BadArg(f"configuration {text!r}: {part!r}: warm, or warm= one of "
                             f"{', '.join(W.ORDERS)}")
            else:
                warm = part[5:] or "slab"
        else:
            key = part.split("=", 1)[0] if "=" in part else None
            if key in ("cpus", "nodes", "every", *BOOT_WORDS):  # (said "is not a kernel ...")
                need = "a whole N >= 0, or every=free" if key == "every" else \
                    "a whole N >= 0" if key in BOOT_WORDS else "a whole N >= 1"
                raise BadArg(f"configuration {text!r}: {part!r}: {key}=N needs {need}")
            try:
                chosen.append(_policy(part))
            except SlabError as e:
                if key in ("mobility", "drain"):    # (the range the remedy takes)
                    raise BadArg(f"configuration {text!r}: {e}") from None
                raise BadArg(f"configuration {text!r}: {part!r} is not a kernel "
                             f"({', '.join(KERNELS)}), cpus=N, nodes=N, every=N (N >= 0) "
                             f"or every=free, a policy ({', '.join(POLICIES)}), a "
                             f"start (warm, warm=random, cold), or a boot parameter "
                             f"({'=N, '.join(BOOT_WORDS)}=N)") from None
    if len(chosen) == 1:
        policy = chosen[0]
    elif chosen:
        try:
            policy = policies.combine([_remedy(w) for w in chosen])
        except SlabError as e:
            raise BadArg(f"configuration {text!r}: {e}") from None
    if nodes > cpus:
        raise BadArg(f"configuration {text!r}: more nodes ({nodes}) than CPUs ({cpus})")
    if nodes > MAX_NODES:       # (SlabAllocator refused it only after the trace's parse and
        raise BadArg(f"configuration {text!r}: {nodes} nodes, past the {MAX_NODES} a "
                     f"machine may have")            # the replays of those before it)
    if cpus > MAX_CPUS:                 # (an OverflowError sizing the arena, cpus=10**11)
        raise BadArg(f"configuration {text!r}: {cpus} CPUs, past the {MAX_CPUS} a machine "
                     f"may have")
    if every and policies.work_ratio(policy) == K.NO_TRIGGER and "every" not in given:
        every = 0       # (a global --every is for the configurations with work to run)
    _check_every_free(policy, every, text, kernel)
    orders = base.orders
    if any(v is not None for v in boot.values()):
        try:
            orders = astuple(boot_orders(*boot.values()))
        except SlabError as e:
            raise BadArg(f"configuration {text!r}: {e}") from None
        objs = order_objects(calculate_order(8, cpus, SlabOrders(*orders)), 8)
        if objs > RSEQ_MAX:     # (kmalloc-8's: refused before the trace is read)
            raise BadArg(f"configuration {text!r}: kmalloc-8's slabs would hold {objs} "
                         f"objects, past the {RSEQ_MAX} of numslab's random sequences, "
                         f"which the replay keeps (CONFIG_SLAB_FREELIST_RANDOM)")
    return Config(kernel, cpus, nodes, policy, every, warm, orders)


def _warm(value: Any) -> str:
    """A warm start's order (:data:`warm.ORDERS`) from :func:`replay`'s ``warm``.

    True is ``slab``, False or ``""`` a cold start."""
    if value is True:
        return "slab"
    if value is False or value == "":
        return ""
    if isinstance(value, str) and value in W.ORDERS:
        return value
    raise BadArg(f"warm={value!r}: True, False or one of {', '.join(W.ORDERS)}")


def _check_every_free(policy: str, every: int, text: str, kernel: str = "7.0") -> None:
    """Refuse an ``every`` with no work to run, and ``leansheaves`` under 6.18.

    ``every=N`` (N > 0) or ``every=free`` is refused with a policy that has no work to run
    (``7.0:sorted:every=5`` ran nothing every 5 events); ``leansheaves`` is 7.0's sheaves made
    lean."""
    if kernel == "6.18" and "leansheaves" in policies.words(policy):
        raise BadArg(f"configuration {text!r}: leansheaves changes 7.0's sheaves; "
                     f"kernel {kernel} has none to change")
    if every and policies.work_ratio(policy) == K.NO_TRIGGER:
        what = "every=free" if every == EVERY_FREE else f"every={every}"
        raise BadArg(f"configuration {text!r}: {what} needs a policy with work to run "
                     f"(shrink, mobility, mobility=R), not {policy!r}")


#: The engine units a replay calls (7.0, the default; a trace of ``kmem_cache_*`` and ``kmalloc``
#: events), in the order it first calls them: on an empty Numba cache :func:`replay.replay`
#: has a second process compile them from the end of the list (``drivers.prewarm``).
REPLAY_UNITS = (
    "pages.init_buddy", "sheaves.init_barns", "sheaves.kmalloc_internal", "kmalloc.kmalloc",
    "nocpu.slab_alloc_single", "slablists.new_slab", "slablists.allocate_slab",
    "pages.alloc_pages", "sheaves.init_percpu_sheaves", "sheaves.replace_empty_main",
    "sheaves.refill_sheaf", "nocpu.refill_objects", "nocpu.refill_new_slabs",
    "stats.live_objects", "stats.lost_objects", "rcusheaves.flush_rcu_sheaves",
    "ops.cache_release", "ops.kmem_cache_shrink", "sheaves.pcs_flush_all",
    "sheaves.sheaf_flush_main", "cpucache.flush_cpu", "sheaves.barn_shrink",
    "slablists.shrink_node", "sheaves.kfree_internal", "sheaves.free_barns",
    "rcusheaves.rcu_run_callbacks", "slablists.slab_free",
    "ops.kmem_cache_alloc_node", "ops.kmem_cache_free",
    "sheaves.replace_full_main", "slablists.build_freelist", "stats.partial_counts")
