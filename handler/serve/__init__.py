"""Start, check and stop a TorchServe instance for the person segmenter (``python -m handler.serve``).

The modules, each one job:

- ``properties``: TorchServe's config.properties (read, write an instance's copy) and the port checks;
- ``group``: the instance's process group (membership, ending it);
- ``tools``: finding ``torchserve`` and checking Java and PyYAML;
- ``instance``: the instance folder, its ``server.json`` record and the ``Server`` handle;
- ``control``: start (``start_server``), wait, stop and rotate-key;
- ``hints`` and ``cli``: the command line and what it prints.

The names below are the package's API; the rest stays inside it.
"""

from handler.serve.cli import main
from handler.serve.control import rotate_key, start_server, stop_server, wait_ready
from handler.serve.errors import ServeError
from handler.serve.instance import (
    DEFAULT_CONFIG,
    DEFAULT_MODEL,
    DEFAULT_MODEL_STORE,
    DEFAULT_WORKDIR,
    KEY_FILE_NAME,
    READY_TIMEOUT_S,
    STATE_NAME,
    STOP_TIMEOUT_S,
    Server,
    read_keys,
)
from handler.serve.properties import DEFAULT_PORTS, read_properties, write_config
from handler.serve.tools import check_prerequisites, find_tool

__all__ = [
    "DEFAULT_CONFIG", "DEFAULT_MODEL", "DEFAULT_MODEL_STORE", "DEFAULT_PORTS", "DEFAULT_WORKDIR", "KEY_FILE_NAME",
    "READY_TIMEOUT_S", "STATE_NAME", "STOP_TIMEOUT_S", "ServeError", "Server", "check_prerequisites", "find_tool",
    "main", "read_keys", "read_properties", "rotate_key", "start_server", "stop_server", "wait_ready",
    "write_config",
]
