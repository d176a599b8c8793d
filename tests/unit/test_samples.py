"""Sample completions (gdro_ray.metrics.samples): which prompts and responses are shown, the
samples.jsonl a resume trims, and where a user reads them (status, report)."""
import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.metrics.samples import (
    TEXT_CHARS,
    SampleLog,
    group_label,
    hardest_sample,
    pick_samples,
    render_sample,
    sample_record,
    samples_markdown,
)
from gdro_ray.metrics.status import render_status
from gdro_ray.protocol import StatusReport


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=8)),
                min_size=1, max_size=30),
       st.integers(1, 3), st.integers(1, 5))
def test_picks_at_most_per_bin_prompts_and_shows_rewarded_responses_first(slots, per_bin, max_responses):
    groups = [g for g, _ in slots]
    rewards = [r for _, r in slots]
    picks = pick_samples(groups, rewards, per_bin, max_responses)
    for g in set(groups):
        mine = [s for s, _ in picks if groups[s] == g]
        assert len(mine) == min(per_bin, groups.count(g))
        assert mine == [s for s, x in enumerate(groups) if x == g][:len(mine)]  # the first in slot order
    for slot, js in picks:
        r = np.asarray(rewards[slot])
        assert len(js) == min(max_responses, r.size) and len(set(js)) == len(js)
        shown = r[js]
        assert list(shown) == sorted(shown, reverse=True)  # successes before failures
        if (r > 0).any():
            assert shown[0] > 0  # a hard prompt's rare success is always among those shown


def _rec(step, label, text="x = 2, so \\boxed{2}"):
    return sample_record(step, label, 7, {"prompt": "What is 1 + 1?", "answer": "2"}, [text, "no"], [1.0, 0.0],
                         [0.9, -0.9], [16, 32], max_new_tokens=32)


def test_a_record_marks_responses_cut_at_the_token_limit_and_labels_bins():
    rec = _rec(4, group_label(0, 11))
    assert rec.bin == "bin0" and group_label(10, 11) == "unseen"
    assert [r.truncated for r in rec.responses] == [False, True]
    json.dumps(rec.to_json())


def test_the_json_line_keeps_its_keys_in_order_and_context_only_for_chat_rows():
    line = _rec(4, "bin0").to_json()
    assert list(line) == ["step", "bin", "prompt_id", "prompt", "answer", "responses"]
    assert line["responses"][0] == {"text": "x = 2, so \\boxed{2}", "reward": 1.0, "advantage": 0.9, "tokens": 16,
                                    "truncated": False}
    chat = sample_record(4, "bin0", 7, {"prompt": "And 2 + 2?", "answer": "4",
                                        "context": [{"role": "user", "content": "hi" * 5000}]},
                         ["4"], [1.0], [0.5], [3], max_new_tokens=32).to_json()
    assert list(chat)[-1] == "context" and len(chat["context"][0]["content"]) == TEXT_CHARS


def test_the_log_keeps_lines_before_a_resumed_step_only(tmp_path):
    log = SampleLog(tmp_path)
    log.extend([_rec(4, "bin0").to_json(), _rec(4, "bin3").to_json()])
    log.extend([_rec(9, "bin1").to_json()])
    with open(log.path, "a") as f:
        f.write('{"step": 14, "bin"')  # torn by a kill
    assert [r["step"] for r in log.records()] == [4, 4, 9]
    log.trim(9)
    assert [r["step"] for r in log.records()] == [4, 4]


def test_status_and_report_show_the_hardest_bin_first():
    newest = [_rec(9, "unseen"), _rec(9, "bin3"), _rec(9, "bin1", "the hard one: \\boxed{2}")]
    records = [r.to_json() for r in (_rec(4, "bin0"), *newest)]  # as read back from samples.jsonl
    hardest = hardest_sample(records)
    assert (hardest["step"], hardest["bin"]) == (9, "bin1")  # the newest step's hardest bin with a sample
    text = render_sample(hardest)
    assert text.startswith("step 10, bin1, prompt 7: What is 1 + 1?") and "reward 1 (advantage +0.90" in text
    assert "cut at the token limit" in text.splitlines()[2]
    md = samples_markdown(records)
    assert md.index("bin1") < md.index("bin3") < md.index("unseen") and "step 5," not in md
    record = {"step": 9, "shadow_price": 0.0, "reward_mean": 0.5, "bin_weights": [0.5, 0.5], "bin_scores": [0, 0],
              "bin_prompts": [1, 1], "bin_rollouts": [8, 8], "bin_pass_at_k": [0.1, None]}
    out = render_status(StatusReport(run_dir="r", record=record, samples=newest))
    assert "the hardest bin's last sample:\nstep 10, bin1" in out
    assert "last sample" not in render_status(StatusReport(run_dir="r", record=record))


def test_the_adversary_keeps_the_typed_reports_for_status():
    """The actor's `status()` in process: the driver's report, the pool's queue length and the newest
    samples come back as sent, and render as `gdro-ray status` prints them."""
    from gdro_ray.config import load_config, to_dict
    from gdro_ray.protocol import DriverReport
    from gdro_ray.service.adversary_actor import AdversaryService

    svc = AdversaryService(to_dict(load_config(None, ["batch_size=8"])), 40, enable_metrics=False, run_dir="r")
    st = svc.status()
    assert (st.record, st.driver, st.eval, st.samples) == (None, None, None, [])
    assert render_status(st).splitlines()[1].startswith("samplers live - (requested")
    svc.report_queue(3)
    svc.report_driver(DriverReport(samplers=2, step_time_s=1.5))
    samples = [_rec(9, "bin3"), _rec(9, "bin1")]
    svc.report_samples(samples)
    sched = svc.schedule()
    svc.observe(sched.step, [[1.0] * int(n) for n in sched.rollouts], None, 1)
    st = svc.status()
    assert st.queued_shards == 3 and st.driver.samplers == 2 and st.samples == samples and st.weights_version == 1
    out = render_status(st)
    assert "samplers live 2" in out and "the hardest bin's last sample:\nstep 10, bin1" in out
