"""A run's parts, made from its config: `build_trainer(cfg, run_dir)` → a `Trainer` that receives them.

In order, so that everything that can be refused is refused before the next, costlier part
starts: Ray (a cluster too small for the config fails here), the model path and the sampler's
lengths, the custom reward's import and the loggers' packages, the data and every prompt's
length, the base evaluation to reuse; then the actors: the adversary (which takes the metrics
port), the run folder (cleared for `--overwrite` only now, written from here on), the learner
group, the sampler pool, and the weight transport. A resumed run restores its checkpoint
(learner, adversary, the step counters, metrics.jsonl trimmed to it) before the samplers start,
so they start on the restored weights. A part that fails to start takes down the ones before it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from gdro_ray.config import Config, dump_config, to_dict
from gdro_ray.engines.prompt_format import PromptFormat
from gdro_ray.errors import UserError
from gdro_ray.metrics.samples import SampleLog
from gdro_ray.service.driver import Trainer
from gdro_ray.service.run_parts import RunParts
from gdro_ray.utils.io import atomic_write_text


def _data(cfg: Config, train_cols, eval_cols) -> tuple[list[dict], list[dict]]:
    from gdro_ray.data import toy_task  # the toy sets honour their size keys (the loaders build the defaults)
    from gdro_ray.data.eval_sets import load_eval_set, load_train_set, spread_subset
    from gdro_ray.engines.prompt_format import with_instruction

    train = (toy_task.make_train_pool(cfg.data.toy_pool_size) if cfg.data.train == "toy"
             else load_train_set(cfg.data.train, train_cols))
    if cfg.data.max_prompts:
        train = train[: cfg.data.max_prompts]
    eval_set = (toy_task.make_eval_split(cfg.data.toy_eval_per_tier) if cfg.data.eval == "toy"
                else load_eval_set(cfg.data.eval, eval_cols))
    eval_set = spread_subset(eval_set, cfg.data.max_eval_prompts)
    return with_instruction(train, cfg.prompt.instruction), with_instruction(eval_set, cfg.prompt.instruction)


def _start_adversary(cfg: Config, num_prompts: int, run_dir: Path):
    import ray

    from gdro_ray.service.adversary_actor import ACTOR_NAME, AdversaryService

    adversary = ray.remote(AdversaryService).options(
        name=ACTOR_NAME, namespace="gdro_ray", num_cpus=0, lifetime=None, get_if_exists=False,
        resources={cfg.cluster.adversary_resource: 1.0} if cfg.cluster.adversary_resource else {},
    ).remote(to_dict(cfg), num_prompts, cfg.metrics.host, cfg.metrics.port, cfg.metrics.enabled,
             str(run_dir.resolve()))
    try:
        addr = ray.get(adversary.metrics_address.remote())
    except ray.exceptions.RayActorError as e:  # died in __init__: say why in one line
        from gdro_ray.service.actor_errors import adversary_start_error

        raise UserError(adversary_start_error(e, cfg.metrics.host, cfg.metrics.port)) from None
    if addr:
        print(f"adversary metrics: {addr}", flush=True)
    return adversary


def _learner_group(cfg: Config, model_path: str):
    from gdro_ray.service.learner_group import LearnerGroup

    g, L = cfg.grpo, cfg.learner
    return LearnerGroup(
        L.world_size, model_path, lr=L.lr, weight_decay=L.weight_decay, grad_clip=L.grad_clip,
        micro_batch=L.micro_batch, micro_batch_tokens=L.micro_batch_tokens,
        gradient_checkpointing=L.gradient_checkpointing, backend=L.backend, dtype=cfg.model.dtype, seed=cfg.seed,
        grpo={"clip_low": g.clip_low, "clip_high": g.clip_high, "kl_coef": g.kl_coef, "mini_batches": g.mini_batches,
              "epochs": g.epochs, "loss_agg": g.loss_agg,
              "temperature": cfg.sampler.temperature if cfg.sampler.temperature > 0 else 1.0},
        num_cpus=L.num_cpus, num_gpus=L.num_gpus, ray_resource=L.ray_resource,
        cpu_affinity=cfg.cluster.learner_cpus or None, reshard_after_forward=L.reshard_after_forward,
        lora=dataclasses.asdict(L.lora))


def _sampler_pool(cfg: Config, model_path: str, sampler_kw: dict, reward_kw: dict, learner, adversary):
    from gdro_ray.service.sampler_pool import SamplerPool

    pin = {"cpu_affinity": cfg.cluster.sampler_cpus} if cfg.cluster.sampler_cpus else {}
    learner_uuids = [i.cuda_uuid for i in learner.infos() if i.cuda_uuid]
    service_kw = dict(sampler_kw, **reward_kw, **pin, gpu=dict(sampler_kw["gpu"], learner_uuids=learner_uuids),
                      num_threads=max(1, int(cfg.sampler.num_cpus)))  # as many torch threads as CPUs, as the learner
    s = cfg.sampler
    pool = SamplerPool(model_path, s.engine, cfg.model.dtype, cfg.seed, cfg.grpo.reward_scale, s.reward_timeout_s,
                       s.num_cpus, s.num_gpus, s.max_samplers, s.max_restarts, ray_resource=s.ray_resource,
                       service_kwargs=service_kw)
    pool.on_queue = lambda n: adversary.report_queue.remote(n)  # fire-and-forget gauge update
    return pool


def restore_checkpoint(parts: RunParts, cfg: Config, run_dir: Path, ckpt: Path | None) -> tuple[int, int]:
    """Load checkpoint `ckpt` (default: the latest) into the learner and the adversary, trim
    metrics.jsonl to its step and stage its weights for the samplers; returns (step, weights version)."""
    import ray

    from gdro_ray.service.checkpoint import latest_checkpoint, read_json
    from gdro_ray.service.run_log import RunLog

    ckpt = ckpt or latest_checkpoint(run_dir)  # verified by cli.train
    parts.learner.load_checkpoint(str(ckpt / "learner"))
    ray.get(parts.adversary.load_state_dict.remote(read_json(ckpt / "adversary.json")))
    drv = read_json(ckpt / "driver.json")
    step, version = int(drv["step"]), int(drv["weights_version"])
    RunLog(run_dir).trim(step)  # steps after the checkpoint are redone
    SampleLog(run_dir).trim(step)
    parts.pool.blob_ref = ray.put(parts.learner.state_dict_bytes())
    parts.pool.version = parts.pool.blob_version = version
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))  # with its overrides, now they took
    print(f"resumed {run_dir} from {ckpt.name} (step {step})", flush=True)
    return step, version


def build_trainer(cfg: Config, run_dir: str | Path, resume: bool = False, resume_from: Path | None = None,
                  clear_first: bool = False):
    """Start the run's parts (see the module docstring) and return the `Trainer` that owns them.

    `resume`: continue the run in `run_dir` from `resume_from` (default: its latest checkpoint).
    `clear_first`: clear the earlier run in `run_dir` once every start check has passed (`--overwrite`)."""
    from gdro_ray.models.registry import resolve_model_path
    from gdro_ray.service import user_extensions as ext
    from gdro_ray.service.gpu_plan import sampler_gpu_kwargs
    from gdro_ray.service.prompt_lengths import check_prompt_lengths
    from gdro_ray.service.ray_start import init_ray
    from gdro_ray.service.validation import base_signature, check_keep_best_on, load_base_from

    run_dir = Path(run_dir).absolute()  # actors work elsewhere
    init_ray(cfg)  # first: a cluster too small for the config fails before any work
    model_path = str(resolve_model_path(cfg.model.path))
    sampler_kw = sampler_gpu_kwargs(cfg, model_path)  # checks the lengths against the model's context
    prompt_format = PromptFormat.from_config(cfg.prompt)  # a system_file that cannot be read stops here
    reward_kw = ext.reward_sampler_kwargs(cfg)  # a custom reward that does not import stops here
    ext.check_logger_packages(cfg)  # so does a logger whose package is absent
    train, eval_set = _data(cfg, *ext.data_columns(cfg))
    check_keep_best_on(cfg.checkpoint.keep_best, cfg.eval.k, eval_set)  # a tier the set lacks
    check_prompt_lengths(model_path, {"data.train": train, "data.eval": eval_set}, sampler_kw["max_model_len"],
                         cfg.sampler.max_new_tokens, prompt_format)  # before any actor starts
    signature = base_signature(cfg, model_path, eval_set, prompt_format)
    # a resumed run reads its own eval_base.json (validation.py), so its source may be gone by then
    reuse = cfg.eval.base_from and not (resume and (run_dir / "eval_base.json").is_file())
    parts = RunParts(adversary=None, pool=None, learner=None, weights=None, train=train, eval_set=eval_set,
                     model_path=model_path, base_signature=signature,
                     base_reuse=load_base_from(cfg.eval.base_from, signature) if reuse else None)
    try:
        parts.adversary = _start_adversary(cfg, len(train), run_dir)
        # Only now, with every start check passed and the metrics port taken, is the folder written:
        # a refused start leaves it as it was (--overwrite clears the earlier run here, not before).
        if clear_first:
            from gdro_ray.service.run_dir import clear_run_dir

            clear_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:  # a resumed run rewrites it only once its checkpoint is restored
            atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        parts.learner = _learner_group(cfg, model_path)
        parts.pool = _sampler_pool(cfg, model_path, dict(sampler_kw, prompt_format=prompt_format.to_dict()),
                                   reward_kw, parts.learner, parts.adversary)
        step = version = 0
        if resume:
            step, version = restore_checkpoint(parts, cfg, run_dir, resume_from)
        parts.pool.resize(cfg.sampler.num_samplers)
        parts.pool.wait_ready(cfg.sampler.num_samplers)
        from gdro_ray.service.weight_transport import make_weight_transport

        parts.weights = make_weight_transport(cfg.weight_sync, parts.learner, parts.pool, cfg.learner.num_gpus,
                                              cfg.sampler.num_gpus, cfg.sampler.tensor_parallel_size)
        print(f"weight sync: {parts.weights.description}", flush=True)
    except BaseException:
        parts.shutdown()
        raise
    return Trainer(cfg, run_dir, parts, step=step, version=version, resume=resume)
