"""The API prompt a compiled request becomes, while it is being built (pure).

The compiler lays the graph out in stages; each stage reads the canonical request and moves the current ends
of the chains (`model`, `clip`, `vae`, `positive`, `negative`, `image`) forward by adding nodes after them.
Node ids are chosen by role, so compiled graphs stay stable and readable; two roles never share an id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Ref = list[Any]  # [node id, output index], the API prompt's link form


@dataclass
class GraphBuilder:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: Ref | None = None
    clip: Ref | None = None
    vae: Ref | None = None
    positive: Ref | None = None
    negative: Ref | None = None
    image: Ref | None = None
    sampler: dict[str, Any] = field(default_factory=dict)
    """Inputs of the Image Inference sampler node, filled before the node is added."""

    def add(self, node_id: str | int, class_type: str, inputs: dict[str, Any]) -> str:
        nid = str(node_id)
        if nid in self.nodes:
            raise ValueError(f"node id {nid} is taken by {self.nodes[nid]['class_type']}; {class_type} needs another")
        self.nodes[nid] = {"class_type": class_type, "inputs": inputs}
        return nid

    @staticmethod
    def ref(node_id: str | int, output: int = 0) -> Ref:
        return [str(node_id), output]
