"""Which items are in which group, with O(1) moves and O(count) uniform sampling inside a group.

Each group keeps a member array (int32, grown by doubling, shrunk when a quarter full) and
each item its group (uint8) and its slot in that array (int32). Leaving a group is a
swap-remove: the group's last staying members fill the holes, so a batch of moves is a few
vectorised numpy operations per group, independent of the pool size.
"""
from __future__ import annotations

import numpy as np

MIN_CAPACITY = 64


class GroupMembership:
    """Partition of items 0..num_items−1 into num_groups groups (≤ 255)."""

    def __init__(self, num_items: int, num_groups: int, initial_group: int):
        if not 1 <= num_groups <= 255:
            raise ValueError(f"num_groups must be in [1, 255], got {num_groups}")
        self.num_items, self.num_groups = int(num_items), int(num_groups)
        self.group = np.full(num_items, initial_group, np.uint8)
        self.slot = np.arange(num_items, dtype=np.int32)
        self.sizes = np.zeros(num_groups, np.int64)
        self.sizes[initial_group] = num_items
        self._members = [np.empty(MIN_CAPACITY, np.int32) for _ in range(num_groups)]
        self._members[initial_group] = np.arange(num_items, dtype=np.int32)

    def members(self, g: int) -> np.ndarray:
        return self._members[g][: self.sizes[g]]

    def sample(self, g: int, count: int, rng: np.random.Generator, replace: bool) -> np.ndarray:
        size = int(self.sizes[g])
        if size == 0 or count == 0:
            return np.empty(0, np.int64)
        picks = rng.integers(0, size, count) if replace else rng.choice(size, min(count, size), replace=False)
        return self._members[g][picks].astype(np.int64)

    def nbytes(self) -> int:
        return self.group.nbytes + self.slot.nbytes + sum(m.nbytes for m in self._members)

    def move(self, ids: np.ndarray, new_group: np.ndarray) -> None:
        """Move distinct items `ids` to `new_group` (items already there are left alone)."""
        old_group = self.group[ids].astype(np.int64)
        moving = old_group != new_group
        if not moving.any():
            return
        ids, old_group, new_group = ids[moving], old_group[moving], new_group[moving]
        for g in np.unique(old_group):
            self._remove(int(g), ids[old_group == g])
        for g in np.unique(new_group):
            self._append(int(g), ids[new_group == g])
        self.group[ids] = new_group.astype(np.uint8)

    def _remove(self, g: int, leaving: np.ndarray) -> None:
        members, size = self._members[g], int(self.sizes[g])
        slots = self.slot[leaving].astype(np.int64)
        new_size = size - len(slots)
        tail_leaving = np.zeros(size - new_size, bool)
        tail_leaving[slots[slots >= new_size] - new_size] = True
        fillers = np.arange(new_size, size)[~tail_leaving]  # staying members past the new end
        holes = np.sort(slots[slots < new_size])
        members[holes] = members[fillers]
        self.slot[members[holes]] = holes
        self.sizes[g] = new_size
        if len(members) > MIN_CAPACITY and new_size < len(members) // 4:
            self._members[g] = members[: max(MIN_CAPACITY, 2 * new_size)].copy()

    def _append(self, g: int, arriving: np.ndarray) -> None:
        size = int(self.sizes[g])
        need = size + len(arriving)
        if need > len(self._members[g]):
            grown = np.empty(max(need, 2 * len(self._members[g])), np.int32)
            grown[:size] = self._members[g][:size]
            self._members[g] = grown
        self._members[g][size:need] = arriving
        self.slot[arriving] = np.arange(size, need, dtype=np.int32)
        self.sizes[g] = need

    def flat_members(self) -> np.ndarray:
        """Every group's members in order, concatenated (with `sizes`, the exact layout)."""
        return np.concatenate([self.members(g) for g in range(self.num_groups)])

    def load(self, group: np.ndarray, sizes: np.ndarray, flat: np.ndarray) -> None:
        """Restore the exact layout from `group`, `sizes` and `flat_members()`; validates first."""
        n, G = self.num_items, self.num_groups
        group = np.asarray(group, np.uint8)
        sizes = np.asarray(sizes, np.int64)
        flat = np.asarray(flat, np.int64)
        if group.shape != (n,) or sizes.shape != (G,) or flat.shape != (n,):
            raise ValueError("group membership state has the wrong shape")
        if (sizes.sum() != n or np.any(np.bincount(group, minlength=G)[:G] != sizes) or group.max() >= G
                or flat.min() < 0 or flat.max() >= n or np.any(np.bincount(flat, minlength=n) != 1)):
            raise ValueError("group membership state is inconsistent (sizes, groups and members disagree)")
        bounds = np.concatenate(([0], np.cumsum(sizes)))
        if np.any(group[flat] != np.repeat(np.arange(G), sizes)):
            raise ValueError("group membership state is inconsistent: a member list holds a foreign item")
        slot = np.empty(n, np.int32)
        members = []
        for g in range(G):
            part = flat[bounds[g]: bounds[g + 1]].astype(np.int32)
            slot[part] = np.arange(len(part), dtype=np.int32)
            members.append(np.concatenate([part, np.empty(max(MIN_CAPACITY - len(part), 0), np.int32)]))
        self.group, self.sizes, self.slot, self._members = group, sizes, slot, members
