"""The CLI sub-commands, each a thin ``run(args)`` over library calls; see ``frankensplit.cli``.

Library packages never import this package.
"""
