"""prompt.*: how a prompt becomes the model's input (gdro_ray.engines.prompt_format), the same
for the samplers, the held-out evaluation and the start check of prompt lengths."""
import pytest
from _tiny import char_tokenizer, save_tiny

from gdro_ray.config import load_config
from gdro_ray.config.loader import ConfigError
from gdro_ray.data import toy_task
from gdro_ray.engines.base import chat_prompt_ids
from gdro_ray.engines.prompt_format import PromptFormat, example_input, model_input, with_instruction
from gdro_ray.errors import UserError
from gdro_ray.protocol import Shard
from gdro_ray.service.prompt_lengths import check_prompt_lengths
from gdro_ray.service.validation import base_signature


def _text(tok, ids):
    return tok.decode(ids)


def test_the_default_is_the_user_turn_alone_as_before():
    tok = char_tokenizer()
    assert PromptFormat().render_ids(tok, ["1+1?"]) == chat_prompt_ids(tok, ["1+1?"])
    assert _text(tok, PromptFormat().render_ids(tok, ["1+1?"])[0]) == "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
    assert PromptFormat().is_default and not PromptFormat(system="x").is_default


def test_a_system_turn_comes_first_and_template_arguments_reach_the_template():
    tok = char_tokenizer()
    got = _text(tok, PromptFormat(system="Be brief.").render_ids(tok, ["1+1?"])[0])
    assert got.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1+1?")
    tok.chat_template = ("{% if enable_thinking is defined and not enable_thinking %}[no-think]{% endif %}"
                         "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    fmt = PromptFormat(chat_template_kwargs={"enable_thinking": False})
    assert _text(tok, fmt.render_ids(tok, ["q"])[0]) == "[no-think]q"
    assert _text(tok, PromptFormat().render_ids(tok, ["q"])[0]) == "q"


def test_raw_is_the_text_as_it_is_and_a_missing_template_names_the_way_out():
    tok = char_tokenizer()
    assert PromptFormat(template="raw").render_ids(tok, ["1+1?"]) == [tok("1+1?")["input_ids"]]
    assert _text(tok, PromptFormat(template="raw", system="Sys").render_ids(tok, ["q"])[0]) == "Sys\n\nq"
    tok.chat_template = None
    with pytest.raises(UserError, match=r"^prompt.template=chat: .*use prompt.template=raw") as e:
        PromptFormat().render_ids(tok, ["q"])
    assert "\n" not in str(e.value)


def test_the_system_prompt_from_a_file_and_the_settings_that_cannot_work(tmp_path):
    f = tmp_path / "system.txt"
    f.write_text("You are a careful mathematician.\n")
    fmt = PromptFormat.from_config(load_config(overrides=[f"prompt.system_file={f}"]).prompt)
    assert fmt.system == "You are a careful mathematician." and PromptFormat.from_dict(fmt.to_dict()) == fmt
    with pytest.raises(UserError, match=r"^prompt.system_file: cannot read .*missing.txt"):
        PromptFormat.from_config(load_config(overrides=[f"prompt.system_file={tmp_path / 'missing.txt'}"]).prompt)
    with pytest.raises(ConfigError, match=r"^prompt.system_file: set either prompt.system or prompt.system_file"):
        load_config(overrides=["prompt.system=a", f"prompt.system_file={f}"])
    with pytest.raises(ConfigError, match=r"^prompt.chat_template_kwargs.x: must be a plain value"):
        load_config(overrides=["prompt.chat_template_kwargs={x: [1, 2]}"])


def test_the_instruction_is_each_sources_own_none_or_the_users():
    pool = toy_task.make_train_pool(30)
    assert with_instruction(pool, "auto") is pool
    ex = pool[0]
    assert ex["prompt"] == f"{ex['problem']} {toy_task.INSTRUCTION}"  # the toy task's own
    assert with_instruction(pool, "")[0]["prompt"] == ex["problem"]
    mine = with_instruction(pool, "Answer in \\boxed{}.")[0]
    assert mine["prompt"] == f"{ex['problem']}\n\nAnswer in \\boxed{{}}." and mine["answer"] == ex["answer"]
    assert with_instruction([{"prompt": "kept"}], "")[0]["prompt"] == "kept"  # a row without its problem


def test_a_system_prompt_counts_in_the_length_check_and_the_base_signature(tmp_path):
    model = str(save_tiny(tmp_path / "model", seed=0))
    overhead = len(PromptFormat().render_ids(char_tokenizer(), [""])[0])
    fits = "x" * (512 - 24 - overhead)
    sets = {"data.train": [{"id": 0, "prompt": fits}], "data.eval": []}
    check_prompt_lengths(model, sets, 512, 24, PromptFormat())
    with pytest.raises(UserError, match=r"^data.train: prompt 0 \(id 0\)"):
        check_prompt_lengths(model, sets, 512, 24, PromptFormat(system="longer now"))
    cfg = load_config(overrides=[])
    plain = base_signature(cfg, model, [], PromptFormat())
    assert "prompt_format" not in plain  # as signatures made before prompt.* existed
    assert base_signature(cfg, model, [], PromptFormat(system="s"))["prompt_format"]["system"] == "s"


CONTEXT = [{"role": "system", "content": "Row's own."}, {"role": "user", "content": "2+2?"},
           {"role": "assistant", "content": "4"}]


def test_a_kept_conversation_renders_its_turns_before_the_problem():
    tok = char_tokenizer()
    conv = model_input("1+1?", CONTEXT)
    assert model_input("1+1?") == "1+1?" and model_input("1+1?", None) == "1+1?"
    assert example_input({"prompt": "1+1?", "context": CONTEXT}) == conv
    got = _text(tok, PromptFormat(system="Config's.").render_ids(tok, [conv])[0])
    assert got == ("<|im_start|>system\nRow's own.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                   "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n")
    # without a system turn of its own the configured one comes first
    got = _text(tok, PromptFormat(system="Config's.").render_ids(tok, [model_input("q", CONTEXT[1:])])[0])
    assert got.startswith("<|im_start|>system\nConfig's.<|im_end|>\n<|im_start|>user\n2+2?")
    raw = PromptFormat(template="raw").render_ids(tok, [conv])[0]
    assert _text(tok, raw) == "Row's own.\n\n2+2?\n\n4\n\n1+1?"
    # a shard carries the contexts beside its prompts; its model inputs are what the engine renders
    shard = Shard(shard_id=0, slots=[0, 1], prompts=["1+1?", "q"], answers=["2", "x"], n=[1, 1], max_new_tokens=4,
                  temperature=1.0, top_p=1.0, contexts=[CONTEXT, None])
    assert shard.model_inputs() == [conv, "q"]
    assert Shard(shard_id=0, slots=[0], prompts=["q"], answers=["x"], n=[1], max_new_tokens=4, temperature=1.0,
                 top_p=1.0).model_inputs() == ["q"]


def test_a_conversations_turns_count_in_the_length_check_and_the_base_signature(tmp_path):
    model = str(save_tiny(tmp_path / "model", seed=0))
    overhead = len(PromptFormat().render_ids(char_tokenizer(), [""])[0])
    fits = "x" * (512 - 24 - overhead)
    check_prompt_lengths(model, {"data.train": [{"id": 0, "prompt": fits}]}, 512, 24, PromptFormat())
    with pytest.raises(UserError, match=r"^data.train: prompt 0 \(id 0\)"):
        check_prompt_lengths(model, {"data.train": [{"id": 0, "prompt": fits, "context": CONTEXT}]}, 512, 24,
                             PromptFormat())
    cfg = load_config(overrides=[])
    plain = base_signature(cfg, model, [{"id": 0, "prompt": "q", "answer": "1"}])
    assert base_signature(cfg, model, [{"id": 0, "prompt": "q", "answer": "1", "context": None}]) == plain
    assert base_signature(cfg, model, [{"id": 0, "prompt": "q", "answer": "1", "context": CONTEXT}]) != plain
