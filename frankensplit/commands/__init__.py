"""Core CLI sub-commands (models, info, encode, decode, demo); see ``frankensplit.cli``."""
