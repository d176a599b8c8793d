"""A prompt longer than the samplers can take is refused at start in one line."""
import pytest
from _tiny import save_tiny

from gdro_ray.engines.base import chat_prompt_ids
from gdro_ray.errors import UserError
from gdro_ray.service.prompt_lengths import check_prompt_lengths


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("m") / "model", seed=0))


def _rendered(model, text):
    from transformers import AutoTokenizer

    return len(chat_prompt_ids(AutoTokenizer.from_pretrained(model), [text])[0])


def test_limit_is_exact_at_the_boundary(model):
    overhead = _rendered(model, "")
    max_model_len, max_new = 512, 24
    fits = "x" * (max_model_len - max_new - overhead)  # one token per character
    assert _rendered(model, fits) == max_model_len - max_new
    sets = {"data.train": [{"id": 0, "prompt": "1+1?"}, {"id": 7, "prompt": fits}], "data.eval": []}
    check_prompt_lengths(model, sets, max_model_len, max_new)  # exactly at the limit: fine
    sets["data.train"].append({"id": 9, "prompt": fits + "y"})
    with pytest.raises(UserError) as e:
        check_prompt_lengths(model, sets, max_model_len, max_new)
    msg = str(e.value)
    assert msg.startswith("data.train: prompt 2 (id 9) has 489 tokens") and "\n" not in msg
    assert "at most 488" in msg


def test_names_the_eval_set_and_the_longest_prompt(model):
    sets = {"data.train": [{"id": 0, "prompt": "short"}],
            "data.eval": [{"id": 3, "prompt": "a" * 600}, {"id": 4, "prompt": "b" * 900}]}
    with pytest.raises(UserError, match=r"^data.eval: prompt 1 \(id 4\)"):
        check_prompt_lengths(model, sets, 512, 24)


def test_unknown_context_is_not_checked(model):
    check_prompt_lengths(model, {"data.train": [{"id": 0, "prompt": "z" * 5000}]}, None, 24)
