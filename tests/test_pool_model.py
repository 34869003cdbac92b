"""Random sequences of pool operations checked against a plain-Python model."""

import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import dreamjit as dj
from dreamjit import PoolConfig

import reference_pool as ref
from invariants import assert_invariants

SHAPE = (3, 3, 3)
coherence = st.sampled_from([0.1, 0.5, 0.8, 0.8, 0.95])  # repeats make ties
utility = st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5, 1.0]))


class PoolMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.policy = None

    @precondition(lambda self: self.policy is None)
    @rule(
        policy=st.sampled_from(["oldest", "lowest_coherence", "lowest_utility"]),
        max_size=st.integers(1, 6),
        budget_entries=st.one_of(st.none(), st.integers(1, 8)),
    )
    def start(self, policy, max_size, budget_entries):
        self.policy = policy
        probe = dj.DreamPool(PoolConfig(memory_budget_mb=None, use_ann=False))
        probe.add(np.zeros(SHAPE, np.float32), (0, 1, 0))
        budget = None if budget_entries is None else budget_entries * probe.entry_bytes / 2**20
        self.pool = dj.DreamPool(
            PoolConfig(
                max_size=max_size,
                eviction=policy,
                memory_budget_mb=budget,
                eviction_threshold=1.0,
                use_ann=False,
            )
        )
        limit = max_size if budget_entries is None else min(max_size, budget_entries)
        self.model = ref.PoolModel(limit, policy)
        self.counts = {}
        self.rng = np.random.default_rng(0)

    def tensor(self):
        return self.rng.random(SHAPE, dtype=np.float32)

    @precondition(lambda self: self.policy is not None)
    @rule(c=coherence, u=utility)
    def add(self, c, u):
        eid = self.pool.add(self.tensor(), (1.0, c, 0.0), utility=u)
        assert eid == self.model.add(c, u)
        if u is not None:
            self.counts[eid] = 1

    @precondition(lambda self: self.policy is not None)
    @rule(cs=st.lists(coherence, min_size=1, max_size=5), threshold_on=st.booleans())
    def add_batch(self, cs, threshold_on):
        n = len(cs)
        t = self.rng.random((n, *SHAPE), dtype=np.float32)
        res = np.column_stack([np.ones(n), cs, np.zeros(n)])
        ids = self.pool.add_batch(t, res, only_coherent=threshold_on)
        offered = [c for c in cs if not threshold_on or c >= 0.75]
        expected = [self.model.add(c) for c in offered]
        assert set(ids.tolist()) == set(expected) & set(self.model.entries)

    @precondition(lambda self: self.policy is not None and len(self.pool) > 0)
    @rule(u=st.sampled_from([0.0, 0.3, 1.0]), pick=st.integers(0, 100))
    def feedback(self, u, pick):
        ids = self.pool.ids()
        eid = int(ids[pick % len(ids)])
        assert self.pool.record_feedback([eid], u) == 1
        self.model.feedback(eid, u, self.counts)

    @precondition(lambda self: self.policy is not None)
    @rule(k=st.integers(1, 8))
    def retrieve(self, k):
        for hits in (
            self.pool.retrieve_similar([0.5, 0.4, 0.3], k=k),
            self.pool.retrieve_soft([0.5, 0.4, 0.3], k=k),
            self.pool.retrieve_diverse([0.5, 0.4, 0.3], k=k),
        ):
            assert len(hits) == min(k, len(self.pool))
            assert set(hits.ids.tolist()) <= set(self.model.entries)

    @precondition(lambda self: self.policy is not None)
    @rule(picks=st.lists(st.integers(0, 100), max_size=4), unknown=st.booleans())
    def remove(self, picks, unknown):
        live = self.pool.ids().tolist()
        ids = [live[p % len(live)] for p in picks] if live else []
        if unknown:  # an id evicted or removed already, else one never issued
            gone = [i for i in range(self.model.next_id) if i not in self.model.entries]
            ids.append(gone[picks[0] % len(gone)] if gone and picks else self.model.next_id + 3)
        before = self.pool.fingerprint()
        expected = self.model.remove(ids)
        if expected is None:
            with pytest.raises(KeyError):
                self.pool.remove(np.array(ids, dtype=np.int64))
            assert self.pool.fingerprint() == before
        else:
            assert self.pool.remove(ids) == expected
            for eid in ids:
                assert eid not in self.pool

    @precondition(lambda self: self.policy is not None and len(self.pool) > 0)
    @rule(pick=st.integers(0, 100))
    def delete(self, pick):
        ids = self.pool.ids()
        eid = ids[pick % len(ids)]  # a numpy int64
        del self.pool[eid]
        assert self.model.remove([int(eid)]) == 1

    @precondition(lambda self: self.policy is not None)
    @rule()
    def clear(self):
        assert self.pool.clear() == self.model.clear()
        assert len(self.pool) == 0

    @precondition(lambda self: self.policy is not None and len(self.pool) > 0)
    @rule(
        pick=st.integers(0, 100),
        c=st.one_of(st.none(), coherence),
        u=utility,
        label=st.one_of(st.none(), st.integers(0, 3)),
        new_tensor=st.booleans(),
    )
    def update(self, pick, c, u, label, new_tensor):
        ids = self.pool.ids()
        eid = int(ids[pick % len(ids)])
        entry = self.pool.update(
            eid,
            result=None if c is None else (1.0, c, 0.0),
            utility=u,
            label=label,
            tensor=self.tensor() if new_tensor else None,
        )
        assert entry.id == eid
        assert self.model.update(eid, self.counts, coherence=c, utility=u, label=label)

    @precondition(lambda self: self.policy is not None)
    @rule()
    def save_load(self):
        with tempfile.TemporaryDirectory() as d:
            back = dj.DreamPool.load(self.pool.save(os.path.join(d, "p.npz")))
        assert back.ids().tolist() == self.pool.ids().tolist()
        self.pool = back

    @invariant()
    def matches_model(self):
        if self.policy is None:
            return
        assert self.pool.ids().tolist() == sorted(self.model.entries)
        for eid, (c, m) in self.model.entries.items():
            e = self.pool[eid]
            assert e.result.coherence == c
            assert e.util_mean == pytest.approx(m)
            assert e.label == self.model.labels[eid]
        stats = self.pool.stats()
        assert stats["removed"] == self.model.removed
        assert stats["next_id"] == self.model.next_id
        assert_invariants(self.pool)


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.slow
def test_pool_machine_long():
    run_state_machine_as_test(
        PoolMachine,
        settings=settings(
            max_examples=300,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
