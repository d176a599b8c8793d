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
    """{tier: (pass@k, mean@k)} from an evaluate() result, tolerant of its exact shape, plus `pooled`."""
    if not res:
        return {}
    out = {}
    for name, v in (res.get("per_tier") or {}).items():
        out[str(name)] = (v.get("pass_at_k"), v.get("mean_at_k"))
    pooled = res.get("pooled") or {}
    out["pooled"] = (pooled.get("pass_at_k"), pooled.get("mean_at_k"))
    return out


def _worst(res: dict | None) -> str | None:
    w = (res or {}).get("worst_tier")
    return str(w["tier"]) if isinstance(w, dict) and w.get("tier") is not None else None


def eval_comparison(base: dict | None, final: dict, tier_names: dict[str, str] | None = None) -> str:
    """Per tier (by name where `tier_names` gives one), pooled, and the worst tier: the tier that
    was worst at the base evaluation, the same tier at base and final (the worst at the end may
    be another one; its row says so)."""
    b, f = _tier_rows(base), _tier_rows(final)
    names = tier_names or {}
    k = final.get("k", 8)

    def row(label: str, bp, fp):
        rel = (fp - bp) / bp * 100 if (bp and fp is not None) else None
        return [label, bp, fp, None if rel is None else f"{rel:+.1f}%"]

    rows = [row(names.get(t, t) if t != "pooled" else t, b.get(t, (None, None))[0], f[t][0]) for t in f]
    worst = _worst(base) or _worst(final)
    if worst is not None and worst in f:
        now = _worst(final)
        moved = f"; {names.get(now, now)} at the end" if base and now is not None and now != worst else ""
        label = f"worst tier ({names.get(worst, worst)}{moved})"
        rows.append(row(label, b.get(worst, (None, None))[0], f[worst][0]))
    return f"held-out pass@{k}, base → final\n" + table(["tier", "base", "final", "rel"], rows)
