"""The run's closing table (metrics.tables.eval_comparison): tiers by name, and the worst-tier
row comparing one tier at base and final."""
import re

from gdro_ray.metrics.tables import eval_comparison
from gdro_ray.service.driver import tier_names


def _res(per_tier: dict, worst: str) -> dict:
    return {"k": 8, "per_tier": {t: {"pass_at_k": p, "mean_at_k": p / 2} for t, p in per_tier.items()},
            "pooled": {"pass_at_k": 0.6, "mean_at_k": 0.3},
            "worst_tier": {"tier": worst, "pass_at_k": per_tier[worst], "mean_at_k": per_tier[worst] / 2}}


def test_tiers_by_name_and_the_worst_tier_is_the_same_tier_at_base_and_final():
    base = _res({"4": 0.40, "5": 0.50}, worst="4")
    final = _res({"4": 0.60, "5": 0.45}, worst="5")  # the end's worst is another tier
    names = tier_names([{"source": "toy"}])
    assert names["0"] == "add3" and names["5"] == "sub_neg"
    out = eval_comparison(base, final, names)
    lines = {re.split(r"\s{2,}", ln.strip())[0]: ln for ln in out.splitlines()[2:]}
    assert "carry_out" in lines and "sub_neg" in lines and "4" not in lines
    worst = next(ln for ln in out.splitlines() if ln.lstrip().startswith("worst tier"))
    assert "worst tier (carry_out; sub_neg at the end)" in worst
    assert "0.400" in worst and "0.600" in worst and "+50.0%" in worst  # carry_out at base and at final
    assert tier_names([{"source": "dapo"}]) is None  # other sets keep their own tier names
    plain = eval_comparison(None, final)
    assert "worst tier (5)" in plain and "at the end" not in plain
