"""Where trials run: Tune's actor reuse only where it cannot starve a node.

End to end, on two real nodes: ``test_cluster.py`` asserts that the RayJob's search and the
node-loss search train on both nodes. With reuse, beside a CPU hog, all of a search's trials
ran on the head in 2 of 4 runs here and in a CI run (2026-12-07): Tune handed each trial the
head's cached actor while the second node's own actor was still starting, and removed it."""

from __future__ import annotations

import ray

from raynas.runtime import trial_actors_reusable


def test_trial_actors_are_reused_on_one_local_node_only(ray_local, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert trial_actors_reusable(None)  # the local instance: one node that cannot grow
    assert not trial_actors_reusable("auto")  # a cluster joined by address may grow
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert not trial_actors_reusable(None)
    monkeypatch.delenv("RAY_ADDRESS")
    one = ray.nodes()
    monkeypatch.setattr(ray, "nodes", lambda: [*one, {**one[0], "NodeID": "b", "Alive": True}])
    assert not trial_actors_reusable(None)  # a cluster the caller joined itself
    monkeypatch.setattr(ray, "nodes", lambda: [*one, {**one[0], "NodeID": "b", "Alive": False}])
    assert trial_actors_reusable(None)  # a node that left does not count
