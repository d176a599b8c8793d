"""Scoring beside generation (`sampler.reward_chunk`, gdro_ray/rewards/overlap.py): the same rewards
in the same order, the same timeout and error accounting as scoring after generation, and real
overlap. The engine is a stand-in whose text depends on the prompt only, so both paths score the
same rollouts."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from gdro_ray.engines.base import Rollout
from gdro_ray.protocol import Shard
from gdro_ray.rewards.custom import RewardFunctionError, RewardFunctionRunner, resolve_spec
from gdro_ray.rewards.math_reward import reset_reward_stats
from gdro_ray.rewards.overlap import ShardScoring, chunk_seed, chunk_spans
from gdro_ray.service.sampler_actor import Sampler

ADVERSARIAL = r"\boxed{9^{9^{9^{9}}}}"  # math-verify cannot finish it: a timeout per call
LIMIT_S = 1.5  # the verifier's limit per comparison in these tests

# (responses of one prompt, its answer): fast path, symbolic slow path (right and wrong),
# no box, an unfinished box, and one comparison that times out
PROMPTS = [
    ([r"\boxed{42}", r"\boxed{41}"], "42"),
    ([r"so \boxed{\frac{2}{4}}", r"\boxed{0.5}", r"\boxed{\sqrt{2}}"], r"\frac{1}{2}"),
    (["no box here", r"\boxed{x^2+2x+1}"], "(x+1)^2"),
    ([r"\boxed{\frac{3", ADVERSARIAL], "7"),
    ([r"\boxed{2\sqrt{2}}", r"\boxed{\sqrt{8}}"], r"\sqrt{8}"),
]


class FakeEngine:
    """Returns PROMPTS' responses for prompts named "p<i>"; sleeps `gen_s` per call."""

    def __init__(self, gen_s: float = 0.0):
        self.gen_s, self.calls = gen_s, []

    def generate(self, prompts, n, max_new_tokens, temperature, top_p, seed=None):
        self.calls.append((len(prompts), seed))
        time.sleep(self.gen_s)
        out = []
        for j, p in enumerate(prompts):
            texts = PROMPTS[int(p[1:])][0]
            # the third response of a prompt ran into the token limit
            out.append([Rollout(j, [7] * (k + 1), texts[k % len(texts)], [-0.5] * (k + 1), "length" if k == 2 else "stop")
                        for k in range(n[j])])
        return out

    def prompt_token_ids(self, prompts):
        return [[1, 2, int(p[1:])] for p in prompts]


def _sampler(chunk: int, engine: FakeEngine | None = None, custom: RewardFunctionRunner | None = None) -> Sampler:
    s = Sampler.__new__(Sampler)  # no model: only the shard loop and the scoring are under test
    # ADVERSARIAL never finishes, so it times out at any limit; 1.5 s keeps every other comparison
    # (the symbolic ones take ~0.1 s) inside it even on a loaded machine
    s.sampler_id, s.reward_scale, s.reward_timeout_s, s.version = 0, "01", LIMIT_S, 0
    s.engine, s.custom_reward, s.reward_chunk, s._reward_thread = engine or FakeEngine(), custom, chunk, None
    return s


def _shard() -> Shard:
    return Shard(shard_id=3, slots=[10 + i for i in range(len(PROMPTS))], prompts=[f"p{i}" for i in range(len(PROMPTS))],
                 answers=[a for _, a in PROMPTS], n=[len(r) for r, _ in PROMPTS], max_new_tokens=8,
                 temperature=1.0, top_p=1.0, seed=5)


def _rewards(out) -> list[list[float]]:
    summary = out[0] if isinstance(out, tuple) else out
    return [r.rewards for r in summary.results]


def test_spans_and_seeds():
    assert chunk_spans(5, 0) == [(0, 5)] and chunk_spans(5, 5) == [(0, 5)] and chunk_spans(5, 9) == [(0, 5)]
    assert chunk_spans(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_seed(None, 3) is None and chunk_seed(11, 0) == 11
    seeds = {chunk_seed(11, c) for c in range(1, 50)}
    assert len(seeds) == 49 and 11 not in seeds and all(0 <= x < 2**31 for x in seeds)


@pytest.mark.parametrize("chunk, separate", [(1, False), (2, True), (3, False)])
def test_overlap_scores_like_serial(chunk, separate):
    reset_reward_stats()  # the memo would let the second path skip math-verify
    serial = _sampler(0).generate_shard(_shard(), separate)
    reset_reward_stats()
    engine = FakeEngine()
    s = _sampler(chunk, engine)
    overlap = s.generate_shard(_shard(), separate)
    expected = [[1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
    assert _rewards(serial) == expected
    assert _rewards(overlap) == expected
    summary = overlap[0] if separate else overlap
    assert [r.slot for r in summary.results] == _shard().slots
    assert [r.truncated for r in summary.results] == [0, 1, 0, 0, 0]  # prompt 1's third response
    assert summary.reward_timeouts == (serial[0] if separate else serial).reward_timeouts == 1
    assert [c[0] for c in engine.calls] == [len(x) for x in (range(a, b) for a, b in chunk_spans(len(PROMPTS), chunk))]
    assert engine.calls[0][1] == 5  # the first chunk samples with the shard's own seed
    if separate:  # the arrays as their own return values, none left in the result
        assert len(overlap) == 1 + 2 * len(PROMPTS) and all(r.group is None for r in summary.results)
        assert overlap[1]["tokens"].tolist() == [7, 7, 7]  # the first prompt's two responses, 1 + 2 tokens
    else:
        assert summary.results[0].group["tokens"].tolist() == [7, 7, 7]


def test_scoring_runs_behind_generation(monkeypatch):
    """4 chunks of 0.2 s generation and 0.2 s scoring: serial 1.6 s, overlapped about 1.0 s."""
    threads = []

    def slow_score(self, shard, i, rollouts):
        threads.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.2)
        return [0.0] * len(rollouts)

    monkeypatch.setattr(Sampler, "_score_prompt", slow_score)
    shard = replace(_shard(), prompts=["p0"] * 4, answers=["42"] * 4, n=[2] * 4, slots=[0, 1, 2, 3])
    serial = _sampler(0, FakeEngine(0.2)).generate_shard(shard)
    assert threads == [True] * 4 and serial.reward_s >= 0.75
    threads.clear()
    overlap = _sampler(1, FakeEngine(0.2)).generate_shard(shard)
    assert threads == [False] * 4
    assert overlap.reward_s < 0.45, overlap  # only the last chunk's scoring is waited for
    assert overlap.reward_busy_s >= 0.75 and overlap.generate_s >= 0.75


USER_MODULE = '''
def flaky(prompts, responses, answers, metadata):
    if "p3" in prompts or "p1" in prompts:
        raise ValueError("cannot score " + prompts[0])
    return [float(len(r)) for r in responses]
'''


@pytest.mark.parametrize("on_error", ["zero", "stop"])
def test_custom_reward_errors_accounted_the_same(tmp_path, on_error):
    path = tmp_path / "user_rewards.py"
    path.write_text(USER_MODULE)
    outcomes = []
    for chunk in (0, 1, 2):
        runner = RewardFunctionRunner(resolve_spec(f"{path}:flaky"), on_error, 2.0)
        try:
            out = _sampler(chunk, custom=runner).generate_shard(_shard())
            outcomes.append((_rewards(out), out.reward_errors, dict(runner.stats)))
        except RewardFunctionError as e:
            # the first failing row in shard order, and no call after it
            outcomes.append((str(e), runner.stats["calls"], runner.stats["errors"]))
        finally:
            runner.close()
    assert outcomes[0] == outcomes[1] == outcomes[2], outcomes
    if on_error == "zero":
        rewards, errors, _ = outcomes[0]
        assert errors == 2 and rewards[1] == [0.0, 0.0, 0.0] and rewards[3] == [0.0, 0.0]
        assert rewards[0] == [10.0, 10.0]
    else:
        assert "row 11" in outcomes[0][0] and outcomes[0][1:] == (2, 1)


def test_concurrent_custom_calls_score_like_serial(tmp_path):
    """`reward.concurrency`: several calls in flight per job, the same rewards in shard order and the
    same error count; with `stop`, the same first failing row."""
    path = tmp_path / "user_rewards.py"
    path.write_text(USER_MODULE)
    outcomes = {}
    for on_error in ("zero", "stop"):
        for concurrency, chunk in ((1, 0), (3, 0), (3, 2)):
            spec = dict(resolve_spec(f"{path}:flaky"), concurrency=concurrency)
            runner = RewardFunctionRunner(spec, on_error, 2.0)
            try:
                out = _sampler(chunk, custom=runner).generate_shard(_shard())
                outcomes[on_error, concurrency, chunk] = (_rewards(out), out.reward_errors)
            except RewardFunctionError as e:
                outcomes[on_error, concurrency, chunk] = str(e)
            finally:
                runner.close()
            if concurrency > 1:
                assert runner.stats["worker_starts"] > 1, "the calls never overlapped"
    for on_error in ("zero", "stop"):
        assert outcomes[on_error, 1, 0] == outcomes[on_error, 3, 0] == outcomes[on_error, 3, 2], outcomes
    assert outcomes["zero", 1, 0][1] == 2 and "row 11" in outcomes["stop", 1, 0]


def test_stop_skips_later_jobs_and_raises_in_order():
    calls = []

    def score(i):
        calls.append(i)
        if i in (1, 2):
            raise RuntimeError(f"bad {i}")
        return [float(i)]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as ex:
        scoring = ShardScoring(score, ex)
        for i in range(4):
            scoring.submit([(i,)])
        with pytest.raises(RuntimeError, match="bad 1"):
            scoring.results()
        with pytest.raises(RuntimeError, match="bad 1"):
            scoring.raise_if_failed()
    assert calls == [0, 1]


def test_config_key_is_checked_and_reaches_the_sampler():
    from gdro_ray.config import load_config
    from gdro_ray.errors import UserError
    from gdro_ray.service.user_extensions import reward_sampler_kwargs

    with pytest.raises(UserError, match="sampler.reward_chunk"):
        load_config(overrides=["sampler.reward_chunk=-1"])
    assert reward_sampler_kwargs(load_config(overrides=["sampler.reward_chunk=3"])) == {"reward_chunk": 3}


def test_engine_failure_waits_for_scoring_in_flight(monkeypatch):
    """A chunk's generation fails while the one before is being scored: that scoring ends before
    the error leaves the shard, so nothing runs on into the next shard's counters."""
    done = []

    def slow_score(self, shard, i, rollouts):
        time.sleep(0.3)
        done.append(i)
        return [0.0] * len(rollouts)

    class Failing(FakeEngine):
        def generate(self, prompts, n, *args, **kw):
            if self.calls:
                raise RuntimeError("engine died")
            return super().generate(prompts, n, *args, **kw)

    monkeypatch.setattr(Sampler, "_score_prompt", slow_score)
    with pytest.raises(RuntimeError, match="engine died"):
        _sampler(2, Failing()).generate_shard(_shard())
    assert done == [0, 1]


@pytest.fixture(scope="module")
def ray_session():
    import sys

    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, namespace="gdro_ray_test", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from _tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("overlap") / "model", seed=0)


class _TextSampler(Sampler):
    """The real sampler (tiny model, transformers engine) whose responses are PROMPTS' texts."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        generate = self.engine.generate

        def with_texts(prompts, n, *a, **k):
            outs = generate(prompts, n, *a, **k)
            for p, rollouts in zip(prompts, outs):
                texts = PROMPTS[int(p.split()[-1])][0]
                for k_, r in enumerate(rollouts):
                    r.text = texts[k_ % len(texts)]
            return outs

        self.engine.generate = with_texts


@pytest.mark.slow
def test_in_a_ray_actor_overlap_scores_like_serial(ray_session, tiny):
    """Inside a real actor: the background thread, math-verify's worker subprocess and the time
    limit give the same rewards and timeout count as scoring on the actor's main thread."""
    from gdro_ray.service.sampler_pool import SamplerPool

    shard = replace(_shard(), prompts=[f"Prompt {i}" for i in range(len(PROMPTS))], max_new_tokens=2)
    got = {}
    for chunk in (0, 2):
        pool = SamplerPool(str(tiny), "hf", "float32", 0, "01", LIMIT_S, num_cpus=0.5, max_samplers=1,
                           sampler_cls=_TextSampler, service_kwargs={"reward_chunk": chunk})
        try:
            pool.resize(1)
            assert pool.wait_ready(1) == 1
            out = ray_session.get(pool.members[0].actor.generate_shard.remote(shard))
            got[chunk] = (_rewards(out), out.reward_timeouts, out.reward_busy_s > 0)
        finally:
            pool.shutdown()
    assert got[0] == got[2] == ([[1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]], 1, True), got
