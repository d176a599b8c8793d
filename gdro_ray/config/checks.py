"""Value checks beyond the controllers' math: what would otherwise hang, train nothing or fail late.

`validate` in loader.py calls `check_service(cfg, need)` after its own checks; every failure is
one `ConfigError` line naming the key. The cases and what each used to do are listed in
docs/bad-inputs.md.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from gdro_ray.config.schema import Config

# pass@k is computed with O(k) array passes per estimate refresh; far beyond any k used for
# difficulty (the paper: 8) the classifier would spend minutes per step (k = 1e9 hung `simulate`).
MAX_PASS_K = 256
# A bound far past any real run (the paper trains hundreds of steps) that still catches a typo'd
# 10^29, which was accepted and would have run until stopped.
MAX_STEPS = 10**7
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")


def is_host(value: str) -> bool:
    """An IP literal or a syntactically valid host name (no DNS lookup: checking must work offline)."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(value))


def check_run_name(name: str) -> str | None:
    """Why `name` cannot name a folder under runs/, or None. A name is one plain path component."""
    if not name:
        return None
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        return f"must be a plain folder name (no '/', no leading '.'), got {name!r}; use out= for another place"
    if "\0" in name:
        return "must not contain NUL"
    return None


def _not_a_data_file(p: Path) -> str | None:
    """What an existing path that is neither a folder nor a data file is, or None."""
    import stat

    try:
        mode = p.stat().st_mode
    except OSError:
        return None
    if stat.S_ISDIR(mode):
        return None
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        return f"{p} is {kind}, not a data file"
    if p.suffix.lower() not in _DATA_SUFFIXES:
        return f"{p} is a file but not a .jsonl/.json/.parquet/.arrow data file"
    return None


def _data_source(value: str, names: tuple[str, ...], key: str, need) -> None:
    if value in names:
        return
    p = Path(value).expanduser()
    if p.is_dir():
        return  # a folder of data files or a saved dataset (gdro_ray/data/table.py)
    what = _not_a_data_file(p)
    need(what is None, key, what or "")
    hub_name = value.count("/") == 1 and " " not in value and not value.startswith((".", "/", "~")) \
        and p.suffix.lower() not in _DATA_SUFFIXES
    if hub_name:
        return  # a hub dataset id: whether it exists is known only once the hub is asked, at start
    need(p.suffix != "" or not value.startswith((".", "/", "~")), key, f"folder {p} not found")
    need(p.suffix.lower() in _DATA_SUFFIXES, key,
         f"{value!r} is not one of {', '.join(names)}, a .jsonl/.json/.parquet/.arrow file, a folder or a hub name owner/name")
    need(p.is_file(), key, f"data file {p} not found")


def _check_cpu_set(cpus: list[int], key: str, local: bool, need) -> None:
    need(all(c >= 0 for c in cpus), key, f"CPU ids must be ≥ 0, got {cpus}")
    need(len(set(cpus)) == len(cpus), key, f"a CPU id appears twice in {cpus}")
    if local and cpus:  # a local Ray's actors run here: a CPU this process may not use would fail in every actor
        import os

        allowed = os.sched_getaffinity(0)
        need(set(cpus) <= allowed, key, f"CPUs {sorted(set(cpus) - allowed)} are not available here "
                                        f"(allowed: {sorted(allowed)})")


def check_service(cfg: Config, need) -> None:
    """Checks of the service keys (sampler, learner, data, checkpoint, metrics, cluster, run folder)."""
    from gdro_ray.data.eval_sets import EVAL_NAMES, TRAIN_NAMES

    c, s, lr = cfg.classifier, cfg.sampler, cfg.learner
    need(cfg.steps <= MAX_STEPS, "steps", f"must be ≤ {MAX_STEPS:,} (a bound past any real run), got {cfg.steps}")
    # Every rollout of one-step off-policy sampling is one weight version behind: a staleness limit
    # of 0 refuses all of them, so each step would be sampled twice (once ahead, once again).
    need(not (cfg.cluster.off_policy and cfg.cluster.max_staleness == 0), "cluster.max_staleness",
         "0 with cluster.off_policy=true refuses every rollout sampled ahead (each is one version old), "
         "so every step would be sampled twice; use ≥ 1, or cluster.off_policy=false")
    need(c.k <= MAX_PASS_K, "classifier.k", f"must be ≤ {MAX_PASS_K} (pass@k costs O(k) per estimate), got {c.k}")
    need(c.prior_refit_every >= 1, "classifier.prior_refit_every", f"must be ≥ 1, got {c.prior_refit_every}")
    need(c.prior_strength_max > 0, "classifier.prior_strength_max", f"must be > 0, got {c.prior_strength_max}")
    need(cfg.grpo.eps > 0, "grpo.eps", f"must be > 0, got {cfg.grpo.eps}")
    # The learner's log-probs are softmax(logits/T) over the full vocabulary; T ≤ 0 has no such policy
    # (T = 0 trained nothing: every ratio 1, every gradient 0; T < 0 failed 30 s in).
    need(s.temperature > 0, "sampler.temperature", f"must be > 0 for training (greedy has no policy gradient), got {s.temperature}")
    # Nucleus sampling draws from a truncated, renormalised distribution the learner never computes:
    # its ratio and KL would be those of another policy. Train on the full tempered distribution.
    need(s.top_p == 1.0, "sampler.top_p",
         f"must be 1.0 for training (the learner trains softmax(logits/T) over the full vocabulary), got {s.top_p}")
    need(s.max_new_tokens >= 1, "sampler.max_new_tokens", f"must be ≥ 1, got {s.max_new_tokens}")
    need(s.shard_size >= 1, "sampler.shard_size", f"must be ≥ 1, got {s.shard_size}")
    need(s.reward_chunk >= 0, "sampler.reward_chunk", f"must be ≥ 0 (0 = no overlap), got {s.reward_chunk}")
    need(s.max_restarts >= 0, "sampler.max_restarts", f"must be ≥ 0, got {s.max_restarts}")
    for key, v in (("sampler.num_cpus", s.num_cpus), ("sampler.num_gpus", s.num_gpus),
                   ("learner.num_cpus", lr.num_cpus), ("learner.num_gpus", lr.num_gpus),
                   ("cluster.num_cpus", cfg.cluster.num_cpus)):
        need(v >= 0, key, f"must be ≥ 0, got {v}")
    for key, cpus in (("cluster.sampler_cpus", cfg.cluster.sampler_cpus), ("cluster.learner_cpus", cfg.cluster.learner_cpus)):
        _check_cpu_set(cpus, key, not cfg.cluster.address, need)
    need(lr.lr > 0, "learner.lr", f"must be > 0, got {lr.lr}")
    need(lr.weight_decay >= 0, "learner.weight_decay", f"must be ≥ 0, got {lr.weight_decay}")
    need(lr.grad_clip > 0, "learner.grad_clip", f"must be > 0, got {lr.grad_clip}")
    need(lr.micro_batch >= 1, "learner.micro_batch", f"must be ≥ 1, got {lr.micro_batch}")
    need(lr.micro_batch_tokens >= 0, "learner.micro_batch_tokens",
         f"must be ≥ 0 (0 = no token cap), got {lr.micro_batch_tokens}")
    _check_lora(lr.lora, need)
    need(cfg.checkpoint.every >= 0, "checkpoint.every", f"must be ≥ 0 (0 = only at the end), got {cfg.checkpoint.every}")
    need(cfg.checkpoint.keep >= 1, "checkpoint.keep", f"must be ≥ 1 (the newest is what --resume needs), got {cfg.checkpoint.keep}")
    need(cfg.reward.timeout_s >= 0, "reward.timeout_s", f"must be ≥ 0 (0 = sampler.reward_timeout_s per response), "
                                                       f"got {cfg.reward.timeout_s}")
    tp = s.tensor_parallel_size
    need(tp >= 1, "sampler.tensor_parallel_size", f"must be ≥ 1, got {tp}")
    if tp > 1:
        need(s.engine == "vllm", "sampler.tensor_parallel_size", f"tensor parallel needs sampler.engine=vllm, got {s.engine}")
        need(s.num_gpus == tp, "sampler.tensor_parallel_size",
             f"{tp} GPUs per sampler need sampler.num_gpus={tp} (got {s.num_gpus:g}); tensor parallel runs on CUDA only")
    need(not (cfg.prompt.system and cfg.prompt.system_file), "prompt.system_file",
         "set either prompt.system or prompt.system_file, not both")
    need(is_host(cfg.metrics.host), "metrics.host", f"not an IP address or host name: {cfg.metrics.host!r}")
    need(cfg.metrics.samples_every >= 0, "metrics.samples_every", f"must be ≥ 0 (0 = never), got {cfg.metrics.samples_every}")
    need(cfg.metrics.samples_per_bin >= 1, "metrics.samples_per_bin", f"must be ≥ 1, got {cfg.metrics.samples_per_bin}")
    need(cfg.metrics.samples_responses >= 1, "metrics.samples_responses",
         f"must be ≥ 1, got {cfg.metrics.samples_responses}")
    need(cfg.data.toy_pool_size >= 1, "data.toy_pool_size", f"must be ≥ 1, got {cfg.data.toy_pool_size}")
    need(cfg.data.toy_eval_per_tier >= 1, "data.toy_eval_per_tier", f"must be ≥ 1, got {cfg.data.toy_eval_per_tier}")
    _data_source(cfg.data.train, TRAIN_NAMES, "data.train", need)
    _data_source(cfg.data.eval, EVAL_NAMES, "data.eval", need)
    bad_name = check_run_name(cfg.name)
    need(bad_name is None, "name", bad_name or "")
    sim = cfg.sim
    need(sim.eval_prompts >= 1, "sim.eval_prompts", f"must be ≥ 1, got {sim.eval_prompts}")
    need(sim.steps >= 1, "sim.steps", f"must be ≥ 1, got {sim.steps}")
    need(sim.batch_size >= 1, "sim.batch_size", f"must be ≥ 1, got {sim.batch_size}")
    need(sim.num_skills >= 1, "sim.num_skills", f"must be ≥ 1, got {sim.num_skills}")
    need(sim.num_tiers >= 1, "sim.num_tiers", f"must be ≥ 1, got {sim.num_tiers}")
    need(sim.eval_every >= 1, "sim.eval_every", f"must be ≥ 1, got {sim.eval_every}")
    need(sim.eval_k >= 1, "sim.eval_k", f"must be ≥ 1, got {sim.eval_k}")
    need(0 <= sim.unsolvable_fraction < 1, "sim.unsolvable_fraction", f"must be in [0,1), got {sim.unsolvable_fraction}")
    need(sim.tail_shape > 0, "sim.tail_shape", f"must be > 0, got {sim.tail_shape}")


def _check_lora(lora, need) -> None:
    need(lora.rank >= 0, "learner.lora.rank", f"must be ≥ 0 (0 = off, full fine-tuning), got {lora.rank}")
    if lora.rank == 0:  # off: the other keys are not read
        return
    need(lora.alpha > 0, "learner.lora.alpha", f"must be > 0 (the update is scaled by alpha / rank), got {lora.alpha}")
    need(0 <= lora.dropout < 1, "learner.lora.dropout", f"must be in [0, 1), got {lora.dropout}")
    targets = [t.strip() for t in lora.target_modules]
    need(bool(targets) and all(targets), "learner.lora.target_modules",
         f"needs at least one module name (or all-linear), none empty; got {lora.target_modules!r}")
    need("all-linear" not in targets or len(targets) == 1, "learner.lora.target_modules",
         f"all-linear already names every linear layer; give it alone, got {lora.target_modules!r}")
