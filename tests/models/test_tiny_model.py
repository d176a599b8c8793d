"""The tiny model and its character tokenizer: round trips, untied weights, save/load."""
import torch

from gdro_ray.data import toy_task as T
from gdro_ray.models import tiny


def test_tokenizer_round_trip_on_task_text_and_chat():
    tok = tiny.build_tokenizer()
    pool = T.make_train_pool(300, seed=0)
    texts = [e["prompt"] for e in pool[:50]] + [T.format_target(e) for e in pool[:50]]
    texts.append("any printable text: ~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./ \t\n")
    for s in texts:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(s)  # one token per character
        assert tok.decode(ids) == s
    chat = tok.apply_chat_template([{"role": "user", "content": pool[0]["prompt"]}], add_generation_prompt=True, tokenize=False)
    assert chat == f"<|im_start|>user\n{pool[0]['prompt']}<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(chat, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == chat
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 2


def test_special_ids_and_padding_side():
    tok = tiny.build_tokenizer()
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert tok.padding_side == "left"
    batch = tok(["ab", "abcd"], add_special_tokens=False, padding=True)
    assert batch["input_ids"][0][:2] == [0, 0] and batch["attention_mask"][0] == [0, 0, 1, 1]
    assert len(tok) <= tiny.VOCAB_ROWS


def test_model_untied_and_seeded():
    model = tiny.build_model("nano", seed=0)
    assert model.config.tie_word_embeddings is False
    emb, head = model.model.embed_tokens.weight, model.lm_head.weight
    assert emb.data_ptr() != head.data_ptr()
    with torch.no_grad():
        head.add_(1.0)
    assert not torch.equal(emb, head)  # changing one leaves the other alone
    same = tiny.build_model("nano", seed=0)
    other = tiny.build_model("nano", seed=1)
    assert torch.equal(same.model.embed_tokens.weight, tiny.build_model("nano", seed=0).model.embed_tokens.weight)
    assert not torch.equal(same.model.embed_tokens.weight, other.model.embed_tokens.weight)
    assert model.generation_config.eos_token_id == 2 and model.generation_config.pad_token_id == 0


def test_save_load_bit_equal(tmp_path):
    tok = tiny.build_tokenizer()
    model = tiny.build_model("nano", seed=3, tokenizer=tok)
    tiny.save(model, tok, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded, tok2 = tiny.load(tmp_path / "m")
    assert loaded.config.tie_word_embeddings is False
    a, b = model.state_dict(), loaded.state_dict()
    assert set(a) == set(b) and "lm_head.weight" in b
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.lm_head.weight.data_ptr() != loaded.model.embed_tokens.weight.data_ptr()
    chat = [{"role": "user", "content": "Compute 1+2."}]
    assert tok2.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == \
        tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert tok2.padding_side == "left" and tok2.eos_token_id == tok.eos_token_id
    assert loaded.generation_config.eos_token_id == tok.eos_token_id
    ids = torch.tensor([tok("Compute 12+34.", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
