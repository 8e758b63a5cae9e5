"""--scheduler addresses that are not a dask scheduler: one-line errors."""

from __future__ import annotations

import socket
import threading

import pytest

from wsi_dram.cache.preprocess import connect_scheduler
from wsi_dram.errors import ConfigError


def test_a_server_that_is_not_dask_is_a_config_error() -> None:
    # A local server of our own that answers in HTTP: its first bytes read as a
    # dask frame length of exabytes.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 4)

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(ConfigError, match="other than a dask scheduler"):
            connect_scheduler(f"tcp://127.0.0.1:{port}", timeout_s=5)
    finally:
        server.close()
