"""The device side: export (`export`, int8 `quantize`), the bundle format (`bundle`), and the
torch-free client (`client`: `preprocess`, the rANS coder of `frankensplit.coding`, `retry`,
`rate_choice`).

This ``__init__`` imports nothing: the edge client must load without torch, so every module is
imported explicitly by what needs it.
"""

__all__: list[str] = []
