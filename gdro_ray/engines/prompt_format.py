"""How a prompt becomes the model's input tokens (`prompt.*`): the chat template with an optional
system turn and template arguments, or the raw text for base models without a template.

Every engine renders its prompts through one `PromptFormat` (`ChatEngineBase.prompt_token_ids`),
so the samplers in training, the held-out evaluation on the samplers, and the start check of
prompt lengths all see the same tokens. It crosses to the sampler actors as a plain dict.
A dataset's chat rows are kept as given: their turns before the problem travel with it and are
rendered before the user turn (`model_input`); a row's own system turn wins over `prompt.system`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gdro_ray.errors import UserError
from gdro_ray.protocol import model_input

TEMPLATES = ("chat", "raw")

# What an engine renders: the prompt text (the user turn), or a whole conversation whose last
# turn is the user's (a dataset's chat rows kept as given: `model_input`).
Prompt = str | list[dict]


def example_input(example: dict) -> Prompt:
    """`model_input` of a dataset example (`gdro_ray.data.table`: "prompt" and, for chat rows, "context")."""
    return model_input(example["prompt"], example.get("context"))


@dataclass(frozen=True)
class PromptFormat:
    template: str = "chat"
    system: str = ""
    chat_template_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise ValueError(f"prompt.template: must be one of {', '.join(TEMPLATES)}, got {self.template!r}")

    @classmethod
    def from_config(cls, prompt_cfg) -> PromptFormat:
        """From the `prompt` section; `system_file` is read here (one line if it cannot be)."""
        system = prompt_cfg.system
        if prompt_cfg.system_file:
            path = Path(prompt_cfg.system_file).expanduser()
            try:
                system = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
                raise UserError(f"prompt.system_file: cannot read {path} as UTF-8 text ({why})") from None
        return cls(prompt_cfg.template, system, dict(prompt_cfg.chat_template_kwargs))

    @classmethod
    def from_dict(cls, d: dict | None) -> PromptFormat:
        return cls() if not d else cls(d.get("template", "chat"), d.get("system", ""), dict(d.get("chat_template_kwargs") or {}))

    def to_dict(self) -> dict:
        return {"template": self.template, "system": self.system, "chat_template_kwargs": dict(self.chat_template_kwargs)}

    @property
    def is_default(self) -> bool:
        return self == PromptFormat()

    def messages(self, prompt: Prompt) -> list[dict]:
        """The chat turns of `prompt`: a conversation as given (its own system turn wins over
        `system`), or `system` and then the prompt as the user turn."""
        turns = [dict(t) for t in prompt] if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        if self.system and not any(t.get("role") == "system" for t in turns):
            turns.insert(0, {"role": "system", "content": self.system})
        return turns

    def text(self, prompt: Prompt) -> str:
        """The raw template's input text: the turns' contents, separated by blank lines."""
        return "\n\n".join(t["content"] for t in self.messages(prompt))

    def render_ids(self, tokenizer, prompts: list[Prompt]) -> list[list[int]]:
        """Token ids of each prompt (text, or a conversation ending in the user turn: `model_input`),
        as every engine feeds them to the model."""
        if self.template == "raw":
            return [[int(t) for t in ids] for ids in tokenizer([self.text(p) for p in prompts])["input_ids"]]
        out = []
        for p in prompts:
            try:
                ids = tokenizer.apply_chat_template(self.messages(p), add_generation_prompt=True, tokenize=True,
                                                    **self.chat_template_kwargs)
            except ValueError as e:  # no template, or one that refuses a system turn
                raise UserError(f"prompt.template=chat: the tokenizer's chat template cannot render this prompt "
                                f"({str(e).strip().splitlines()[0]}); use prompt.template=raw for a model "
                                "without one") from None
            # transformers 5 may return a BatchEncoding-like mapping instead of a list
            if hasattr(ids, "keys") and "input_ids" in ids:
                ids = ids["input_ids"]
            out.append([int(t) for t in ids])
        return out


def with_instruction(examples: list[dict], instruction: str) -> list[dict]:
    """Examples whose prompt ends in `instruction` (`prompt.instruction`): `auto` keeps each
    source's own; otherwise the problem (the prompt without its source's instruction), then the
    text after a blank line, or nothing. Examples that do not know their problem keep their prompt."""
    if instruction == "auto":
        return examples
    out = []
    for ex in examples:
        problem = ex.get("problem")
        if problem is None:
            out.append(ex)
            continue
        out.append(dict(ex, prompt=f"{problem}\n\n{instruction}" if instruction else problem))
    return out
