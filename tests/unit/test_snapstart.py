"""After a SnapStart restore, no upstream connection of the snapshot is reused."""

from __future__ import annotations

import snapshot_restore_py

import broker.upstream


def test_the_upstream_pool_is_emptied_after_a_restore() -> None:
    # Given a pool holding a connection pool for an endpoint, as a snapshot would
    broker.upstream.POOL.connection_from_url("http://127.0.0.1:9/auth/token/")
    assert len(broker.upstream.POOL.pools) >= 1
    # When the runtime runs the after-restore hooks
    hooks = [func for func, _, _ in snapshot_restore_py.get_after_restore()]
    assert broker.upstream.POOL.clear in hooks
    for hook in hooks:
        if hook == broker.upstream.POOL.clear:
            hook()
    # Then nothing is left to reuse
    assert len(broker.upstream.POOL.pools) == 0
