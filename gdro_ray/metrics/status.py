"""The running job's adversary state as a table (`gdro-ray status`, `cli/status.py`)."""
from __future__ import annotations

from gdro_ray.metrics.exporter import group_labels
from gdro_ray.metrics.samples import hardest_sample, render_sample
from gdro_ray.metrics.tables import table
from gdro_ray.protocol import StatusReport


def render_status(st: StatusReport) -> str:
    rec = st.record
    samplers = "-" if st.driver is None else st.driver.samplers
    head = (f"run {st.run_dir}  algorithm {st.algorithm}  metrics {st.metrics_address or '-'}\n"
            f"samplers live {samplers} (requested {st.desired_samplers})  "
            f"weights v{st.weights_version}  rollouts {st.rollouts_total}")
    ev = st.eval
    if ev:
        m, k = ev.metrics or {}, ev.k
        head += (f"\neval after {ev.steps_done} steps: pooled pass@{k} {m.get('pooled/pass_at_k', float('nan')):.3f}"
                 f"  mean@{k} {m.get('pooled/mean_at_k', float('nan')):.3f}")
        if ev.best:
            head += f"  best {ev.best['metric']} {ev.best['best_value']:.3f} (step {ev.best['best_step']})"
    if not rec:
        return head + "\nno step finished yet"
    head += f"\nstep {rec['step'] + 1}  μ {rec.get('shadow_price', 0):.4f}  reward {rec.get('reward_mean', 0):.3f}"
    labels = group_labels(len(rec["bin_weights"]))
    rows = [[lab, rec["bin_weights"][i], rec["bin_scores"][i], rec["bin_prompts"][i], rec["bin_rollouts"][i],
             rec["bin_pass_at_k"][i]] for i, lab in enumerate(labels)]
    out = head + "\n" + table(["bin", "weight q", "score S", "prompts", "rollouts", "pass@k"], rows)
    sample = hardest_sample([r.to_json() for r in st.samples])  # the samples.jsonl readers take its lines
    if sample is not None:
        out += "\nthe hardest bin's last sample:\n" + render_sample(sample, chars=200)
    return out
