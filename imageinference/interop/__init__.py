"""Graph <-> request interop shared by the compiler and the exporter: the graph under construction and the
registry of feature modules (one per request concept) that add themselves to both directions."""
