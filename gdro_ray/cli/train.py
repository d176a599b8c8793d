"""`gdro-ray train [CONFIG] [key=value ...] [--dry-run] [--resume RUN_DIR] [--overwrite]`.

Everything that can be refused is refused before Ray starts and before the run folder is
touched: the config, the checkpoint to resume (and the overrides tried on its state), the
start checks (network, files the run reads) and the run folder (a non-empty one needs
`--overwrite`). Then the run folder is locked for this process, and the run's parts are built
and run.
"""
from __future__ import annotations

import logging


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    from gdro_ray.config import dump_config, load_config
    from gdro_ray.service.build import build_trainer
    from gdro_ray.service.driver import stopped_job_as_one_line
    from gdro_ray.service.run_dir import check_new_run_dir, prepare_resume, resolve_run_dir

    ckpt = None
    if args.resume is not None:  # checkpoint verified, overrides tried on its state: before anything starts
        cfg, run_dir, ckpt = prepare_resume(args.resume, args.config, args.overrides)
    else:
        from gdro_ray.service.start_checks import record_reward_path

        cfg = record_reward_path(load_config(args.config, args.overrides))  # config.yaml names the file used
        run_dir = resolve_run_dir(cfg)
    from gdro_ray.service.start_checks import check_start

    check_start(cfg, run_dir, resume=ckpt is not None, network=not args.dry_run)  # before Ray and the folder
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    clear = False
    if ckpt is None:
        clear = check_new_run_dir(run_dir, overwrite=getattr(args, "overwrite", False), config_path=args.config, cfg=cfg)
    from gdro_ray.service.run_lock import RunLock

    lock = RunLock(run_dir).acquire()  # one writer per run folder, until this process ends
    try:
        with stopped_job_as_one_line(run_dir=run_dir):  # a part that fails to start: one line
            trainer = build_trainer(cfg, run_dir, resume=ckpt is not None, resume_from=ckpt, clear_first=clear)
        trainer.run()
    finally:
        lock.release(remove_if_unused=True)  # a start refused before writing leaves the folder as it was
    return 0
