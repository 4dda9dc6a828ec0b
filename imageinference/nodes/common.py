"""What every node of the pack shares: id prefix, category."""

NODE_PREFIX = "ImageInference"
CATEGORY = "imageInference"


def node_id(name: str) -> str:
    return f"{NODE_PREFIX}{name}"
