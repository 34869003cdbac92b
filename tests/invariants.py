"""The one pool-invariant check every pool test calls (it lives in :mod:`dreamjit.testing`)."""

from dreamjit.testing import assert_pool_invariants as assert_invariants  # noqa: F401
