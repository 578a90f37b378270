"""Connections: the systems an operator defines once, with their secrets, and plans refer to by name.

registry   the Connections mapping (trackcheck.toml + the API's), validation, saving
masking    which option values are secret, masked copies, keeping secrets a client sent back masked
keyring    Fernet encryption of what is stored, with the service's secret key
"""

from trackcheck.connections.keyring import Keyring
from trackcheck.connections.masking import MASK, mask_options, mask_url
from trackcheck.connections.registry import ConnectionInfo, Connections, check_connection

__all__ = ["MASK", "ConnectionInfo", "Connections", "Keyring", "check_connection", "mask_options", "mask_url"]
