"""The embedded toy reasoning task: integer arithmetic in six difficulty tiers.

Each tier is one *skill family* (findings §8: skills must transfer within a tier, so that
RL on training prompts shows on held-out ones):

    tier 0  add3        3-digit + 3-digit, no carry                 347+251
    tier 1  add_carry   3-digit + 3-digit, >= 1 carry, sum < 1000   478+356
    tier 2  sub3        3-digit - 3-digit, no borrow                598-251
    tier 3  sub_borrow  3-digit - 3-digit, >= 1 borrow, result > 0  512-347
    tier 4  carry_out   3-digit + 3-digit, sum >= 1000              847+356
    tier 5  sub_neg     3-digit - 3-digit, negative result          251-598

How difficulty arises (world v2, `gdro_ray.models.prepare`): the warm-start model practises
right arithmetic, but its chat demonstrations show the right answer for tier t only in a
share `right_rate[t]` of cases and otherwise a *systematic slip* — the same result with the
last digit one higher (`slip`). So the base model holds the right procedure and picks it in
the chat format only sometimes: rarely on the hard tiers, not never, which is what lets RL
raise them. The tier order is the measured difficulty of the default model (mean@8 falls
with the tier; carry_out and sub_neg form the hard tail, pass@8 0.05-0.35).

Prompts are DAPO style but short (the tiny model has a small context):
``Compute 347+251. Put the final answer in \\boxed{}.``; answers are integers as strings.
The SFT target response (`format_target`) echoes the expression, then the result and the box:
``347+251=598\\boxed{598}`` (at most 24 characters, so with the end token it fits the toy
preset's 28 new tokens).

Splits never share a question. Every question text is hashed (blake2b, independent of seeds
and Python's hash salt) into one of three buckets: eval (5 %), SFT (25 %), training pool
(70 %). The training pool, the held-out split and the SFT warm-start set each draw only
from their own bucket, so they are disjoint for every seed and size by construction.

Randomness: a `random.Random` seeded from a blake2b digest of (purpose, seed), using only
`random()` (the one method Python promises to keep stable across versions); integers and
shuffles are derived from it here. So the pool is a pure function of (seed, size), and a
prompt's id is its index in the pool. Tier frequencies of the pool are heavy-tailed
(`TIER_SHARES`): most prompts easy, a long tail of hard ones; the counts per tier are the
largest-remainder rounding of share × size and the order is shuffled, so every prefix of
the pool has roughly the same mix. Questions are unique within the pool and within the
held-out split (whose ids are its own indices, tier-major); the SFT set may repeat.

Question spaces: every tier has 10^5 or more questions (~5,000+ in the eval bucket, so a
held-out split of 200 or more per tier is easy). A pool or split that asks a tier for more
distinct questions than its bucket holds raises `DataError` naming the tier.
"""
from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable

from gdro_ray.errors import DataError

TIER_NAMES = ("add3", "add_carry", "sub3", "sub_borrow", "carry_out", "sub_neg")
NUM_TIERS = len(TIER_NAMES)
TIER_SHARES = (0.40, 0.25, 0.15, 0.10, 0.06, 0.04)
INSTRUCTION = "Put the final answer in \\boxed{}."
SOURCE = "toy"

# Hash buckets (percent of the question space): [0, 5) eval, [5, 30) SFT, [30, 100) pool.
_EVAL_CUT, _SFT_CUT = 5, 30
_PROMPT_RE = re.compile(r"^Compute (?P<expr>[0-9+\-*]+)\. ")
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")


def _rng(purpose: str, seed: int) -> random.Random:
    digest = hashlib.blake2b(f"gdro_ray.toy/{purpose}/{int(seed)}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _randint(rng: random.Random, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] from `random()` only (stable across Python versions)."""
    return lo + min(int(rng.random() * (hi - lo + 1)), hi - lo)


def _shuffle(rng: random.Random, items: list) -> None:
    for i in range(len(items) - 1, 0, -1):
        j = _randint(rng, 0, i)
        items[i], items[j] = items[j], items[i]


def _digits(n: int, width: int) -> list[int]:
    return [int(c) for c in str(n).zfill(width)]


def _has_carry(a: int, b: int) -> bool:
    return any(x + y > 9 for x, y in zip(_digits(a, 3), _digits(b, 3)))


def _has_borrow(a: int, b: int) -> bool:
    return any(x < y for x, y in zip(_digits(a, 3), _digits(b, 3)))


# Each sampler returns (expression, integer answer); rejection keeps the tier's constraint.
def _add3(rng: random.Random) -> tuple[str, int]:
    while True:
        a, b = _randint(rng, 100, 999), _randint(rng, 100, 999)
        if not _has_carry(a, b):
            return f"{a}+{b}", a + b


def _sub3(rng: random.Random) -> tuple[str, int]:
    while True:
        a, b = _randint(rng, 100, 999), _randint(rng, 100, 999)
        if not _has_borrow(a, b):
            return f"{a}-{b}", a - b


def _add_carry(rng: random.Random) -> tuple[str, int]:
    while True:
        a, b = _randint(rng, 100, 999), _randint(rng, 100, 999)
        if _has_carry(a, b) and a + b <= 999:  # 3-digit results keep the target short
            return f"{a}+{b}", a + b


def _sub_borrow(rng: random.Random) -> tuple[str, int]:
    while True:
        a, b = _randint(rng, 100, 999), _randint(rng, 100, 999)
        if a > b and _has_borrow(a, b):
            return f"{a}-{b}", a - b


def _carry_out(rng: random.Random) -> tuple[str, int]:
    while True:
        a, b = _randint(rng, 100, 999), _randint(rng, 100, 999)
        if a + b >= 1000:
            return f"{a}+{b}", a + b


def _sub_neg(rng: random.Random) -> tuple[str, int]:
    while True:
        a, b = _randint(rng, 100, 999), _randint(rng, 100, 999)
        if a < b:
            return f"{a}-{b}", a - b


_SAMPLERS: tuple[Callable[[random.Random], tuple[str, int]], ...] = (
    _add3, _add_carry, _sub3, _sub_borrow, _carry_out, _sub_neg)


def format_prompt(expression: str) -> str:
    return f"Compute {expression}. {INSTRUCTION}"


def split_of(question: str) -> str:
    """'eval', 'sft' or 'pool': the bucket a question text belongs to (seed independent)."""
    h = int.from_bytes(hashlib.blake2b(question.encode(), digest_size=8).digest(), "big") % 100
    return "eval" if h < _EVAL_CUT else "sft" if h < _SFT_CUT else "pool"


def _draw(tier: int, count: int, bucket: str, rng: random.Random, unique: bool, seen: set[str] | None = None) -> list[tuple[str, int]]:
    """`count` questions of `tier` from `bucket`; unique ones unless `unique` is False."""
    seen = set() if seen is None else seen
    out: list[tuple[str, int]] = []
    budget = 60 * count + 2000  # rejection attempts before the tier is declared exhausted
    while len(out) < count:
        if budget == 0:
            raise DataError(
                f"toy task: tier {tier} ({TIER_NAMES[tier]}) has too few distinct '{bucket}' questions "
                f"for {count} prompts; use a smaller data.toy_pool_size / data.toy_eval_per_tier"
            )
        budget -= 1
        expr, value = _SAMPLERS[tier](rng)
        prompt = format_prompt(expr)
        if split_of(prompt) != bucket or (unique and prompt in seen):
            continue
        seen.add(prompt)
        out.append((prompt, value))
    return out


def tier_counts(size: int, shares: tuple[float, ...] = TIER_SHARES) -> list[int]:
    """Largest-remainder rounding of share × size (sums to `size` exactly)."""
    total = sum(shares)
    raw = [s / total * size for s in shares]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda t: (-(raw[t] - counts[t]), t))
    for t in order[: size - sum(counts)]:
        counts[t] += 1
    return counts


def _example(idx: int, prompt: str, value: int, tier: int) -> dict:
    # `problem`: the question without the instruction (`prompt.instruction` may replace it)
    return {"id": idx, "prompt": prompt, "problem": prompt.removesuffix(f" {INSTRUCTION}"), "answer": str(value),
            "tier": tier, "source": SOURCE}


def make_train_pool(size: int = 14100, seed: int = 0) -> list[dict]:
    """The RL training pool: `size` unique prompts, heavy-tailed tiers, id = index."""
    if size < 0:
        raise DataError(f"toy task: pool size must be >= 0, got {size}")
    rng = _rng("pool", seed)
    counts = tier_counts(size)
    questions = {t: _draw(t, counts[t], "pool", rng, unique=True) for t in range(NUM_TIERS)}
    order = [t for t in range(NUM_TIERS) for _ in range(counts[t])]
    _shuffle(rng, order)
    cursor = [0] * NUM_TIERS
    pool = []
    for idx, t in enumerate(order):
        prompt, value = questions[t][cursor[t]]
        cursor[t] += 1
        pool.append(_example(idx, prompt, value, t))
    return pool


def make_eval_split(per_tier: int = 200, seed: int = 0) -> list[dict]:
    """Held-out split balanced across tiers (tier-major order), disjoint from every pool."""
    if per_tier < 0:
        raise DataError(f"toy task: per_tier must be >= 0, got {per_tier}")
    rng = _rng("eval", seed)
    out = []
    for t in range(NUM_TIERS):
        for prompt, value in _draw(t, per_tier, "eval", rng, unique=True):
            out.append(_example(len(out), prompt, value, t))
    return out


def make_sft_set(counts: list[int] | tuple[int, ...], seed: int = 0, stream: str = "chat",
                 right_rate: tuple[float, ...] | None = None) -> list[dict]:
    """Warm-start examples from the SFT bucket (never in a pool or an eval split).

    `counts[t]` examples of tier t, drawn independently (a small tier may repeat a question),
    then shuffled. `stream` names an independent random stream (one per warm-start phase).
    `right_rate[t]`: the demonstration of a tier-t example shows the right answer with this
    probability and otherwise the slipped one (`slip`), in the key "shown" that
    `format_target` writes; "answer" always stays the right one.
    """
    if len(counts) != NUM_TIERS:
        raise ValueError(f"make_sft_set: need {NUM_TIERS} counts, got {len(counts)}")
    rng = _rng(f"sft/{stream}", seed)
    rows = [(p, v, t) for t in range(NUM_TIERS) for p, v in _draw(t, int(counts[t]), "sft", rng, unique=False)]
    _shuffle(rng, rows)
    out = [_example(i, p, v, t) for i, (p, v, t) in enumerate(rows)]
    if right_rate is not None:
        if len(right_rate) != NUM_TIERS:
            raise ValueError(f"make_sft_set: need {NUM_TIERS} right rates, got {len(right_rate)}")
        slips = _rng(f"slip/{stream}", seed)
        for ex in out:
            right = slips.random() < right_rate[ex["tier"]]
            ex["shown"] = ex["answer"] if right else str(slip(int(ex["answer"])))
    return out


def expression_of(prompt: str) -> str:
    m = _PROMPT_RE.match(prompt)
    if not m:
        raise ValueError(f"not a toy-task prompt: {prompt[:60]!r}")
    return m.group("expr")


def format_target(example: dict) -> str:
    """The SFT target response: the expression, '=', the result, then the boxed result."""
    expr, ans = expression_of(example["prompt"]), example.get("shown", example["answer"])
    return f"{expr}={ans}\\boxed{{{ans}}}"


def slip(value: int) -> int:
    """The systematic slip: `value` with its last digit one higher (9 wraps to 0); never `value`."""
    sign = -1 if value < 0 else 1
    mag = abs(value)
    return sign * (mag - mag % 10 + (mag % 10 + 1) % 10)


def last_boxed(response: str) -> str | None:
    found = _BOXED_RE.findall(response)
    return found[-1] if found else None


def integer_reward(response: str, answer: str) -> float:
    """1.0 when the last \\boxed{} holds exactly the integer `answer` (spaces ignored), else 0.0."""
    boxed = last_boxed(response)
    if boxed is None:
        return 0.0
    text = boxed.replace(" ", "")
    if not re.fullmatch(r"[+-]?\d{1,40}", text) or not re.fullmatch(r"[+-]?\d{1,40}", answer.strip()):
        return 0.0
    return 1.0 if int(text) == int(answer.strip()) else 0.0
