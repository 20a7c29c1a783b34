"""ARCHITECTURE.md's tables against the code: the state's fields and the modules of each tier."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from numslab.engine import layout as L
from numslab.flags import STAT_NAMES

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "ARCHITECTURE.md").read_text()
STATE = DOC[DOC.index("## The state"):DOC.index("**Process-wide tables**")]
TIERS = DOC[DOC.index("## Tiers"):DOC.index("## The state")]
#: a row of the state table: | `name`[, `name`] | `[shape]` | meaning | fresh value |
ROW = re.compile(r"^\| `(\w+)`(?:, `(\w+)`)? \| `\[([^\]]*)\]` \| .* \| ([^|]*) \|$")


def _rows(text: str = STATE) -> dict[str, tuple[str, str]]:
    """The state table's rows: field name -> (shape as written, fresh value as written)."""
    rows = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            for name in m.group(1, 2):
                if name:
                    rows[name] = (m.group(3), m.group(4).strip())
    return rows


def test_the_state_table_names_every_field_and_no_other():
    names = [name for name, _ in L.FIELDS]
    rows = _rows()
    assert sorted(rows) == sorted(names)


def test_the_state_table_finds_a_missing_row():
    cut = "\n".join(line for line in STATE.splitlines() if not line.startswith("| `barn` |"))
    assert "barn" not in _rows(cut) and "barn_partial" in _rows(cut)


@pytest.mark.parametrize("nodes,cpus", [(1, 2), (2, 4)])
def test_each_field_has_the_shape_the_table_gives(nodes, cpus):
    npages, caches = 2048, 40
    buf = L.new_state(npages, nodes, cpus, caches, 0, 0, npages * 4096)
    st = L.SlabState(buf)
    names = dict(P=npages, C=caches, U=cpus, N=nodes, S=len(STAT_NAMES), max=max,
                 **{k: getattr(L, k) for k in dir(L) if k.isupper()})
    for name, (shape, _) in _rows().items():
        want = eval("(" + shape.replace("×", "*") + ",)", names)     # noqa: S307 - our doc
        a = getattr(st, name)
        assert a.dtype == np.int64 and a.shape == want, (name, a.shape, shape)


def test_each_plain_fresh_value_is_the_fields_fill():
    """Where the table gives a plain sentinel (0 or NIL) it is the one ``new_state`` writes."""
    fill = dict(L.FIELDS)
    plain = {name: value for name, (_, value) in _rows().items()
             if value in ("0", "NIL") or value.startswith(("0 (", "0; "))}
    assert len(plain) >= 20
    for name, value in plain.items():
        assert fill[name] == (L.NIL if value == "NIL" else 0), (name, value)


def _modules(folder: str) -> set[str]:
    return {f.stem for f in (ROOT / "numslab" / folder).glob("*.py")} - {"__init__"}


@pytest.mark.parametrize("folder", ["engine", "drivers", "facade", "tools", "lab", "net", "."])
def test_the_tiers_section_names_every_module(folder):
    named = set(re.findall(r"`(\w+)(?:\.py)?`", TIERS))
    assert _modules(folder) - named == set()


def test_the_engine_table_has_a_row_for_each_engine_module_and_no_other():
    rows = set(re.findall(r"^\| `(\w+)\.py` \|", TIERS, re.M))
    assert rows == _modules("engine")
