"""netflowgen: per-IP traffic models from NetFlow/IPFIX (the NetFlowGen method and beyond)."""

__version__ = "0.1.0"
