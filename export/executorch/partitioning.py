"""XNNPACK's partitioner with the dependency index it builds held as bitmasks, not Python sets.

ExecuTorch's GroupBasedPartitioner (which XnnpackPartitioner uses) builds a `_DependencyViewer`
before partitioning: for every node of the program, the set of every node downstream of it and
the set of every node upstream of it; its base class, torch.fx's CapabilityBasedPartitioner,
first builds its own viewer of downstream sets, which the subclass then replaces. That is
quadratic in the graph's size: for a 125M decoder (30 blocks, each linear a
dynamic-quantization pattern of several nodes) those sets were the largest allocation of the
whole export, ~0.7 GB of its 2.06 GB peak. Only downstream sets are ever read (whether a
partition's external users lead back into it), and only by iterating them.

`lean_dependency_index()` has both built as `DownstreamBits` for the lowering's duration: the
same downstream closure, one integer bitmask per node (n^2/8 bytes: a few MB for that graph), so
every merge is decided as before. Partitions, and so the lowered program, are the same byte for byte;
tests/export/test_executorch.py compares the programs lowered both ways. The viewers are
internals of ExecuTorch 1.5.1 and torch 2.13: a release that renames one fails loudly here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class DownstreamBits:
    """Every node's transitive users as a bitmask over the graph's node order."""

    def __init__(self, graph_module: Any) -> None:
        self._nodes = list(graph_module.graph.nodes)
        index = {node: i for i, node in enumerate(self._nodes)}
        self._down: dict[Any, int] = {}
        # Users come after their inputs in an FX graph, so walking backwards finds every user's
        # closure done.
        for node in reversed(self._nodes):
            mask = 0
            for user in node.users:
                mask |= (1 << index[user]) | self._down[user]
            self._down[node] = mask

    def downstreams_of(self, node: Any) -> Iterator[Any]:
        mask = self._down.get(node, 0)
        if not mask:
            return
        bits = bin(mask)  # "0b" + most significant bit first
        top = len(bits) - 3
        pos = bits.find("1", 2)
        while pos != -1:
            yield self._nodes[top - (pos - 2)]
            pos = bits.find("1", pos + 1)


@contextlib.contextmanager
def lean_dependency_index() -> Iterator[None]:
    """While lowering, both viewers are built as `DownstreamBits` instead of sets."""
    from executorch.exir.backend.canonical_partitioners import group_partitioner
    from torch.fx.passes.infra import partitioner

    modules = (partitioner, group_partitioner)
    stock = [module._DependencyViewer for module in modules]  # AttributeError on a release that renamed it
    for module in modules:
        module._DependencyViewer = DownstreamBits
    try:
        yield
    finally:
        for module, viewer in zip(modules, stock):
            module._DependencyViewer = viewer
