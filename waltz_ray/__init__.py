"""WaltzRL on Ray: a conversation agent and a feedback agent trained together with multi-agent RL."""

__version__ = "0.1.0"
