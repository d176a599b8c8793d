"""The running job's adversary state as a table (`gdro-ray status`, `cli/status.py`)."""
from __future__ import annotations

from gdro_ray.metrics.exporter import group_labels
from gdro_ray.metrics.samples import hardest_sample, render_sample
from gdro_ray.metrics.tables import table


def render_status(st: dict) -> str:
    rec = st.get("record")
    drv = st.get("driver") or {}
    head = (f"run {st.get('run_dir')}  algorithm {st.get('algorithm')}  metrics {st.get('metrics_address') or '-'}\n"
            f"samplers live {drv.get('samplers', '-')} (requested {st.get('desired_samplers')})  "
            f"weights v{st.get('weights_version')}  rollouts {st.get('rollouts_total')}")
    ev = st.get("eval")
    if ev:
        m, k = ev.get("metrics") or {}, ev.get("k")
        head += (f"\neval after {ev.get('steps_done')} steps: pooled pass@{k} {m.get('pooled/pass_at_k', float('nan')):.3f}"
                 f"  mean@{k} {m.get('pooled/mean_at_k', float('nan')):.3f}")
        if ev.get("best"):
            head += f"  best {ev['best']['metric']} {ev['best']['best_value']:.3f} (step {ev['best']['best_step']})"
    if not rec:
        return head + "\nno step finished yet"
    head += f"\nstep {rec['step'] + 1}  μ {rec.get('shadow_price', 0):.4f}  reward {rec.get('reward_mean', 0):.3f}"
    labels = group_labels(len(rec["bin_weights"]))
    rows = [[lab, rec["bin_weights"][i], rec["bin_scores"][i], rec["bin_prompts"][i], rec["bin_rollouts"][i],
             rec["bin_pass_at_k"][i]] for i, lab in enumerate(labels)]
    out = head + "\n" + table(["bin", "weight q", "score S", "prompts", "rollouts", "pass@k"], rows)
    sample = hardest_sample([r.to_json() for r in st.get("samples") or []])  # the samples.jsonl readers take its lines
    if sample is not None:
        out += "\nthe hardest bin's last sample:\n" + render_sample(sample, chars=200)
    return out
