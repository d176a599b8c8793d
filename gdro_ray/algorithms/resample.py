"""Prompt-GDRO's resample mode: a batch's prompts drawn by q over the difficulty groups.

Each slot's group is drawn from q (multinomial), then a prompt inside that group. A group
asked for more slots than it has members gives every member ⌊slots/size⌋ visits and the
remainder to a random subset, so the batch follows q while repeating no prompt more than
needed. A group's room is its size times `cap`, the most visits one prompt may get in a step
(1 without repeats, `prompt_gdro.max_repeats` with them, unlimited when 0); slots beyond it
overflow to the other groups with room in proportion to their q (not to the largest groups),
repeatedly until every slot fits. A pool too small for the cap raises it to the fewest repeats
that fit.

A refill round of DAPO dynamic sampling (`Adversary.extend`) passes the step's earlier prompts
as `taken`: their visits count against the cap, and inside a group the least-visited members
are picked first, so refills never push a prompt past the cap the step's own draw respects.
Pure numpy; the random stream is the caller's, so the draw is part of its seeded sequence.
"""
from __future__ import annotations

import numpy as np


def resample_prompts(rng: np.random.Generator, classifier, q: np.ndarray, counts: np.ndarray, size: int,
                     cap: int, taken: np.ndarray | None = None) -> np.ndarray:
    """`size` prompt ids, in random order; `classifier` gives groups, members and in-group draws."""
    slots = rng.multinomial(size, q)
    held = 0 if taken is None else int(np.asarray(taken).size)
    if cap > 0 and int(counts.sum()) * cap < size + held:
        cap = -(-(size + held) // int(counts.sum()))  # a pool too small for the cap: the least repeats that fit
    visits = None
    if taken is not None and np.asarray(taken).size:
        visits = np.bincount(np.asarray(taken, dtype=np.int64), minlength=classifier.num_prompts)
    if cap > 0:
        room = counts.astype(np.int64) * cap
        if visits is not None:  # what the step's earlier rounds used of each group's room
            seen = np.flatnonzero(visits)
            used = np.bincount(np.asarray(classifier.groups(seen), dtype=np.int64),
                               weights=np.minimum(visits[seen], cap), minlength=room.size)
            room = room - used.astype(np.int64)
        while True:
            extra = int(np.maximum(slots - room, 0).sum())
            if extra == 0:
                break
            slots = np.minimum(slots, room)
            open_q = np.where(slots < room, q, 0.0)
            if open_q.sum() <= 0:  # q is zero on every group with room: fall back to room
                open_q = (slots < room).astype(np.float64)
            slots = slots + rng.multinomial(extra, open_q / open_q.sum())
    ids = []
    for g in np.flatnonzero(slots):
        want, members_n = int(slots[g]), int(counts[g])
        if visits is not None:
            ids.append(least_visited(rng, classifier.members(int(g)), visits, want))
        elif want <= members_n:
            ids.append(np.asarray(classifier.sample(int(g), want, rng, False), dtype=np.int64))
        else:
            members = np.asarray(classifier.members(int(g)), dtype=np.int64)
            rest = rng.choice(members, size=want % members_n, replace=False)
            ids.append(np.concatenate([np.tile(members, want // members_n), rest]))
    out = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    return out[rng.permutation(out.size)]  # no group-sorted order leaks downstream


def least_visited(rng: np.random.Generator, members: np.ndarray, visits: np.ndarray, want: int) -> np.ndarray:
    """`want` draws from `members`, each round among those with the fewest visits so far."""
    members = np.asarray(members, dtype=np.int64)
    v = visits[members].copy()
    out = []
    while want > 0:
        cand = np.flatnonzero(v == v.min())
        pick = rng.choice(cand, size=min(want, cand.size), replace=False)
        v[pick] += 1
        out.append(members[pick])
        want -= pick.size
    return np.concatenate(out) if out else np.zeros(0, np.int64)
