"""``numslab.flags``: the kernel's flag values, and GFP masks printed as the kernel's ``%pGg``."""
from numslab import flags as F
from numslab.flags import gfp_names


def test_gfp_names_print_as_the_kernel_does():
    # composites first (most bits first), then each flag in bit order, the rest in hex
    assert gfp_names(F.GFP_KERNEL) == "GFP_KERNEL"
    assert gfp_names(F.GFP_KERNEL | F.__GFP_NOWARN | F.__GFP_ZERO) == \
        "GFP_KERNEL|__GFP_ZERO|__GFP_NOWARN"
    assert gfp_names(F.GFP_KERNEL | F.__GFP_ACCOUNT) == "GFP_KERNEL_ACCOUNT"
    assert gfp_names(F.GFP_USER) == "GFP_USER"                   # not GFP_KERNEL|__GFP_HARDWALL
    assert gfp_names(F.GFP_ATOMIC | F.__GFP_THISNODE) == "GFP_ATOMIC|__GFP_THISNODE"
    assert gfp_names(F.__GFP_DIRECT_RECLAIM) == "__GFP_DIRECT_RECLAIM"
    assert gfp_names(F.GFP_NOWAIT | 0x10000000) == "GFP_NOWAIT|0x10000000"
    assert gfp_names(0) == ""                                  # format_flags prints nothing
    assert gfp_names(F.__GFP_RECLAIM) == "GFP_NOIO"             # the same bits: first wins
    # every flag numslab defines is named: no bit of theirs is left for the hex
    every = 0
    for name in dir(F):
        if name.startswith("__GFP_"):
            every |= getattr(F, name)
    assert "0x" not in gfp_names(every)


def test_gfp_nowait_implies_nowarn():
    # include/linux/gfp_types.h (6.18 on): GFP_NOWAIT is __GFP_KSWAPD_RECLAIM | __GFP_NOWARN.
    # This project's 6.18.44 printed kvmalloc's flags (GFP_USER less direct reclaim, plus
    # __GFP_NOWARN: kmalloc_gfp_adjust) as "GFP_NOWAIT|__GFP_IO|__GFP_FS|__GFP_HARDWALL";
    # numslab's GFP_NOWAIT lacked __GFP_NOWARN, so a failed GFP_NOWAIT allocation printed
    # slab_out_of_memory's warning, which the kernel's never does
    assert F.GFP_NOWAIT == F.__GFP_KSWAPD_RECLAIM | F.__GFP_NOWARN
    kvmalloc = F.GFP_USER & ~F.__GFP_DIRECT_RECLAIM | F.__GFP_NOWARN
    assert gfp_names(kvmalloc) == "GFP_NOWAIT|__GFP_IO|__GFP_FS|__GFP_HARDWALL"
    assert gfp_names(F.__GFP_KSWAPD_RECLAIM) == "__GFP_KSWAPD_RECLAIM"
