"""Element offsets that can pass 2**31 - 1 are formed in int64 (kernels on tensors of a few GB:
a dense attention bias at 46341 keys, a flat activation of 2**31 elements).

Triton passes an integer argument below 2**31 as int32 and multiplies int32 values in int32,
wrapping silently, so every offset built from a program id, a loop position or a row index
times a stride or row length must go through ``wide_mul`` or an int64 cast. Testing that on
the sizes themselves needs tensors past 2**31 elements; instead the helper is run in the
interpreter on a product past 2**31, and the kernels' sources are checked for the pattern.
The C++/CUDA kernels get the same check on their index types.
"""

import ast
import re
from pathlib import Path

import pytest
import torch

from mfkernels.backends.triton import attention
from mfkernels.backends.triton.triton_compat import HAS_TRITON, INTERPRET, tl, triton, wide_mul

ROOT = Path(__file__).resolve().parents[2]
TRITON_DIR = ROOT / "mfkernels" / "backends" / "triton"
KERNEL_FILES = sorted(
    p for p in TRITON_DIR.glob("*.py") if p.name not in ("__init__.py", "launch.py", "attention.py")
)

# Names a product with which forms an element offset (strides, row lengths, sequence lengths).
EXTENT = re.compile(r"^(stride\w*|dim|N_Q|N_K)$")

# Products whose other factor stays small, int32 by design: (function, factor) -> why. A factor
# that is a tl.arange, or a name assigned one, is a position within a tile and needs no entry.
TILE_LOCAL = {
    (
        "_query_major_bias_ptrs",
        "offs_n[None, :]",
    ): "arange(BLOCK_N) at both calls; the loops add wide_mul(start_n, ...)",
    ("_part_ptrs", "offs_d[None, :]"): "head-dim columns, < 256",
    ("_part_ptrs", "offs_e[None, :]"): "head-dim columns, < 256",
}
# Parameters every caller passes in int64 (the kernels' program ids cast, checked below).
WIDE_PARAMS = {"_row_ptrs": {"off_b", "off_h"}, "_query_major_bias_ptrs": {"off_b", "off_h"}}
# Program ids used in int32 on purpose: a block's first query or key, compared with N_Q and N_K
# (< 2**31) and turned into an offset only by wide_mul in _row_ptrs. (function, statement value).
NARROW_PROGRAM_IDS = {
    ("_attn_jvp_fwd_kernel", "tl.program_id(0) * BLOCK_M"),
    ("_attn_bwd_delta_kernel", "tl.program_id(0) * BLOCK_M"),
    ("_attn_bwd_dkdv_kernel", "tl.program_id(0) * BLOCK_N"),
    ("_attn_bwd_dkdv_queries", "tl.program_id(0) * BLOCK_N"),
    ("_attn_bwd_dq_kernel", "tl.program_id(0) * BLOCK_M"),
}


def _jit_functions():
    for path in KERNEL_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                "jit" in ast.unparse(d) for d in node.decorator_list
            ):
                yield path.name, node


def _is_widening(node):
    """``x.to(tl.int64)``, ``tl.cast(x, tl.int64)`` or ``wide_mul(...)``."""
    if not isinstance(node, ast.Call):
        return False
    text = ast.unparse(node.func)
    return text == "wide_mul" or (text.endswith((".to", "tl.cast")) and "tl.int64" in ast.unparse(node))


def _mentions(node, names):
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node)) or any(
        _is_widening(n) for n in ast.walk(node)
    )


def _is_arange(node):
    return isinstance(node, ast.Call) and ast.unparse(node.func) == "tl.arange"


def _local_names(fn):
    """Names assigned a tl.arange and nothing else: positions within a tile."""
    assigned = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        assigned.setdefault(n.id, []).append(_is_arange(node.value))
    return {name for name, aranges in assigned.items() if all(aranges)}


def _is_local(node, local):
    """A tl.arange or a local name, perhaps indexed (``offs[:, None]``)."""
    while isinstance(node, ast.Subscript):
        node = node.value
    return _is_arange(node) or (isinstance(node, ast.Name) and node.id in local)


def _wide_names(fn):
    """Names assigned (to a fixed point) from an int64 value: a widening call or a wide name."""
    wide = set(WIDE_PARAMS.get(fn.name, ()))
    while True:
        before = len(wide)
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and _mentions(node.value, wide):
                for target in node.targets:
                    wide |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        if len(wide) == before:
            return wide


def _narrow_offset_products():
    found, allowed = [], set()
    for file, fn in _jit_functions():
        wide, local = _wide_names(fn), _local_names(fn)
        for node in ast.walk(fn):
            if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)):
                continue
            for extent, other in ((node.right, node.left), (node.left, node.right)):
                if not (isinstance(extent, ast.Name) and EXTENT.match(extent.id)):
                    continue
                if _mentions(other, wide) or _is_local(other, local):
                    continue
                if (fn.name, ast.unparse(other)) in TILE_LOCAL:
                    allowed.add((fn.name, ast.unparse(other)))
                    continue
                found.append(f"{file}:{node.lineno} {fn.name}: {ast.unparse(node)}")
    return found, allowed


def _narrow_program_ids():
    found, allowed = [], set()
    for file, fn in _jit_functions():
        parents = {child: parent for parent in ast.walk(fn) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(fn):
            if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "tl.program_id"):
                continue
            up = parents[node]
            if _is_widening(up) or (isinstance(up, ast.Attribute) and _is_widening(parents[up])):
                continue
            up = node
            while not isinstance(parents[up], ast.stmt):
                up = parents[up]
            if (fn.name, ast.unparse(up)) in NARROW_PROGRAM_IDS:
                allowed.add((fn.name, ast.unparse(up)))
            else:
                found.append(f"{file}:{node.lineno} {fn.name}: {ast.unparse(up)}")
    return found, allowed


def test_offset_products_are_int64():
    found, allowed = _narrow_offset_products()
    assert found == []
    assert allowed == set(TILE_LOCAL)  # an entry the code no longer needs would excuse new code


def test_program_ids_are_widened():
    found, allowed = _narrow_program_ids()
    assert found == []
    assert allowed == NARROW_PROGRAM_IDS


def test_the_checks_see_a_removed_cast():
    """The static checks fail on a kernel written the way that overflows."""
    src = """
@triton.jit
def k(X, n_rows, dim, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    offs = rows[:, None] * dim
"""
    fn = ast.parse(src).body[0]
    assert _wide_names(fn) == set()
    mult = [n for n in ast.walk(fn) if isinstance(n, ast.BinOp) and ast.unparse(n) == "rows[:, None] * dim"]
    assert mult and not _mentions(mult[0].left, _wide_names(fn))
    assert _mentions(ast.parse("wide_mul(rows, dim)").body[0].value, set())


@pytest.mark.skipif(not (HAS_TRITON and INTERPRET), reason="runs in the Triton interpreter")
def test_wide_mul_passes_2_to_the_31():
    @triton.jit
    def offsets(OUT, stride, first_pid):
        pid = tl.program_id(0) + first_pid
        tl.store(OUT + tl.program_id(0), wide_mul(pid, stride))

    out = torch.zeros(2, dtype=torch.int64)
    # Both factors fit in int32 (Triton passes them so); their products do not.
    offsets[(2,)](out, 40_000, 70_000)
    assert out.tolist() == [70_000 * 40_000, 70_001 * 40_000]
    assert out[0].item() > 2**31 - 1


def test_wide_rows_where_one_head_passes_2_to_the_31():
    """The attention launchers' ``WIDE_ROWS``: int64 loop offsets only where a row position
    times its stride can pass 2**31 - 1 within one head (batch and head offsets are int64
    always), so the DiT's shapes keep the int32 steps their registers were tuned with."""
    meta = dict(device="meta", dtype=torch.bfloat16)
    dit = torch.empty(256, 16, 1024, 72, **meta)  # DiT-XL/2 at 512 x 512, batch 256
    assert not attention.wide_rows(dit, None)
    assert not attention.wide_rows(torch.empty(4096, 16, 1024, 72, **meta))  # 4.8e9 elements
    bias = torch.empty(1, 1, 46341, 46341, **meta).expand(2, 16, -1, -1)
    assert attention.wide_rows(dit, bias)
    qkv = torch.empty(1, 621379, 3, 16, 72, **meta)  # q of a packed qkv: row stride 3456
    assert attention.wide_rows(qkv[:, :, 0].transpose(1, 2))
    assert not attention.wide_rows(qkv[:, :600000, 0].transpose(1, 2))


@pytest.mark.skipif(not (HAS_TRITON and INTERPRET), reason="runs in the Triton interpreter")
def test_attention_with_int64_row_steps_gives_the_same_bits(monkeypatch):
    q, k, v, qd, kd, vd, grad_o = (torch.randn(1, 2, 70, 72) for _ in range(7))
    bias = torch.randn(1, 2, 70, 70)

    def run():
        o, o_dot, lse = attention.attention_jvp_triton(q, k, v, qd, kd, vd, 0.1, bias=bias)
        return o, o_dot, lse, *attention.attention_backward_triton(grad_o, q, k, v, o, lse, 0.1, bias=bias)

    narrow = run()
    monkeypatch.setattr(attention, "wide_rows", lambda *tensors: True)
    for a, b in zip(narrow, run(), strict=True):
        assert torch.equal(a, b)


# The C++/CUDA kernels: an index over a tensor (elements, rows, row offsets) is int64_t; int
# is kept for compile-time counts and positions within one row's vectors or one block.
CSRC_FILES = [ROOT / "csrc" / "cpu" / "kernels.cpp", ROOT / "csrc" / "cuda" / "kernels.cu"]
SMALL_BOUNDS = {"N", "VEC", "kFwdIters", "kBwdIters", "warps", "chunks", "R"}


def test_csrc_loop_indices_are_int64():
    narrow = []
    for path in CSRC_FILES:
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            for m in re.finditer(
                r"for \((?:int|unsigned|unsigned int)\s+\w+\s*=[^;]*;\s*\w+\s*<\s*(\w+)", line
            ):
                if m.group(1) not in SMALL_BOUNDS:
                    narrow.append(f"{path.name}:{line_no}: {line.strip()}")
            # Offsets and row indices named as such, and thread ids times a block size.
            if not line.lstrip().startswith("for") and re.search(
                r"\b(?:int|unsigned)\s+(?:off|row|total|n|i|b|t)\s*=", line
            ):
                narrow.append(f"{path.name}:{line_no}: {line.strip()}")
            for m in re.finditer(r"(\w+\()?blockIdx\.\w\s*\*", line):
                if m.group(1) != "int64_t(":
                    narrow.append(f"{path.name}:{line_no}: {line.strip()}")
    assert narrow == []
