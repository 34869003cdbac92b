"""Plain-Python references for the budget kernels and the pool's bookkeeping."""


def admission_plan(keys, ids, n_existing, limit):
    """Sequential adds: before each new one, evict min (key, id) while full."""
    members = list(range(n_existing))
    gone = [False] * len(keys)
    for pos in range(n_existing, len(keys)):
        while len(members) >= limit:
            victim = min(members, key=lambda i: (keys[i], ids[i]))
            members.remove(victim)
            gone[victim] = True
        members.append(pos)
    return gone


class PoolModel:
    """What a pool must hold after a sequence of adds, removals and updates: ids,
    eviction, coherence, running mean utility and labels."""

    def __init__(self, limit, policy):
        self.limit, self.policy = limit, policy
        self.entries = {}  # id -> (coherence, util_mean)
        self.labels = {}  # id -> label or None
        self.next_id = 0
        self.removed = 0

    def key(self, eid):
        coherence, util = self.entries[eid]
        return {"oldest": 0.0, "lowest_coherence": coherence, "lowest_utility": util}[self.policy]

    def add(self, coherence, utility=None):
        while len(self.entries) >= self.limit:
            victim = min(self.entries, key=lambda i: (self.key(i), i))
            del self.entries[victim]
        eid = self.next_id
        self.next_id += 1
        self.entries[eid] = (coherence, 0.0 if utility is None else utility)
        self.labels[eid] = None
        return eid

    def remove(self, ids):
        """Remove every id of ``ids`` (duplicates once), or nothing if any is unknown:
        the number removed, or None when refused."""
        wanted = set(ids)
        if not wanted <= set(self.entries):
            return None
        for eid in wanted:
            del self.entries[eid]
            del self.labels[eid]
        self.removed += len(wanted)
        return len(wanted)

    def clear(self):
        n = len(self.entries)
        self.entries.clear()
        self.labels.clear()
        self.removed += n
        return n

    def update(self, eid, counts, coherence=None, utility=None, label=None):
        """Change an entry in place (None: unchanged); False for an unknown id."""
        if eid not in self.entries:
            return False
        c, m = self.entries[eid]
        if coherence is not None:
            c = coherence
        if utility is not None:
            m = utility
            counts[eid] = 1
        self.entries[eid] = (c, m)
        if label is not None:
            self.labels[eid] = label
        return True

    def feedback(self, eid, u, counts):
        if eid in self.entries:
            c, m = self.entries[eid]
            n = counts.get(eid, 0)
            self.entries[eid] = (c, (m * n + u) / (n + 1))
            counts[eid] = n + 1
