"""An actor that dies at creation is reported by its root cause in one line."""
import socket

import pytest

from gdro_ray.service.actor_errors import adversary_start_error, root_cause

REMOTE = ("The actor died because of an error raised in its creation task, \x1b[36mray::AdversaryService.__init__()"
          "\x1b[39m (pid=1, ip=10.0.0.1)\n  File \"x.py\", line 8, in __init__\n    self.server_bind()\n"
          "OSError: [Errno 98] Address already in use")


def test_root_cause_is_the_innermost_exception_line():
    assert root_cause(RuntimeError(REMOTE)) == "OSError: [Errno 98] Address already in use"
    nested = REMOTE.replace("OSError", "ray.exceptions.RaySystemError")
    assert root_cause(RuntimeError(nested)).startswith("ray.exceptions.RaySystemError:")
    assert root_cause(RuntimeError("no traceback here\nsecond")) == "no traceback here"
    assert root_cause(ValueError("")) == "ValueError"


def test_port_in_use_names_metrics_port():
    msg = adversary_start_error(RuntimeError(REMOTE), "127.0.0.1", 9464)
    assert msg.startswith("metrics.port: 9464") and "\n" not in msg
    other = adversary_start_error(RuntimeError("died\nValueError: prior_refit_every must be >= 1"), "127.0.0.1", 0)
    assert other == "the adversary actor could not start: ValueError: prior_refit_every must be >= 1"


@pytest.mark.slow
def test_real_adversary_on_a_busy_port_reports_the_port():
    import ray

    from gdro_ray.config import load_config, to_dict
    from gdro_ray.service.adversary_actor import AdversaryService

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        cfg = load_config(overrides=[f"metrics.port={port}"])
        actor = ray.remote(AdversaryService).options(num_cpus=0).remote(to_dict(cfg), 50, "127.0.0.1", port, True, "")
        with pytest.raises(ray.exceptions.RayActorError) as e:
            ray.get(actor.metrics_address.remote(), timeout=120)
        msg = adversary_start_error(e.value, "127.0.0.1", port)
        assert msg.startswith(f"metrics.port: {port} on 127.0.0.1 is already in use") and "\n" not in msg
    finally:
        ray.shutdown()
        busy.close()


def test_user_error_from_a_ray_task_prints_one_line(monkeypatch, capsys):
    """A UserError raised in an actor reaches the CLI wrapped in Ray's remote traceback."""
    import ray.exceptions

    from gdro_ray.cli import main as cli
    from gdro_ray.errors import UserError

    remote = ray.exceptions.RayTaskError("sample", "Traceback (most recent call last):\n  File x\nUserError: boom",
                                         UserError("data.train: prompt 3 (id 7) has 900 tokens")).as_instanceof_cause()
    assert isinstance(remote, UserError) and "\n" in str(remote)

    def fake_train(args):
        raise remote

    monkeypatch.setitem(cli.COMMANDS, "train", ("tests.test_actor_errors", "fake"))
    monkeypatch.setattr("importlib.import_module", lambda name: type("M", (), {"fake": staticmethod(fake_train)}))
    assert cli.main(["train", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err == "gdro-ray train: error: data.train: prompt 3 (id 7) has 900 tokens\n"
