"""Plain-text tables shared by `train`, `eval` and `status`."""
from __future__ import annotations


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c) -> str:
    if isinstance(c, float):
        return "nan" if c != c else f"{c:.3f}"
    return "-" if c is None else str(c)


def _tier_rows(res: dict | None) -> dict:
    """{tier name: (pass@k, mean@k)} from an evaluate() result, tolerant of its exact shape."""
    if not res:
        return {}
    out = {}
    for name, v in (res.get("per_tier") or {}).items():
        out[str(name)] = (v.get("pass_at_k"), v.get("mean_at_k"))
    pooled = res.get("pooled") or {}
    out["pooled"] = (pooled.get("pass_at_k"), pooled.get("mean_at_k"))
    if "worst_tier" in res and isinstance(res["worst_tier"], dict):
        out["worst tier"] = (res["worst_tier"].get("pass_at_k"), res["worst_tier"].get("mean_at_k"))
    return out


def eval_comparison(base: dict | None, final: dict) -> str:
    b, f = _tier_rows(base), _tier_rows(final)
    k = final.get("k", 8)
    rows = []
    for name in f:
        bp = b.get(name, (None, None))[0]
        fp = f[name][0]
        rel = (fp - bp) / bp * 100 if (bp and fp is not None) else None
        rows.append([name, bp, fp, None if rel is None else f"{rel:+.1f}%"])
    return f"held-out pass@{k}, base → final\n" + table(["tier", "base", "final", "rel"], rows)
