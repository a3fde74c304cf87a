"""The one influxd (InfluxDB 1.x) configuration: dev stack, tests and an installed hall."""

from pathlib import Path

_TEMPLATE = """\
# Written by {writer}; edits are overwritten.
reporting-disabled = true
# The backup/restore RPC address (influxd backup -portable, windowrate backup).
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{data}/meta"

[data]
  dir = "{data}/data"
  wal-dir = "{data}/wal"
  # fsync every write before answering 204: an accepted batch survives a crash.
  wal-fsync-delay = "0s"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{host}:{http_port}"
  log-enabled = false
  max-body-size = 50000000

[logging]
  level = "warn"

[continuous_queries]
  enabled = false
"""


def influxd_conf(
    *, data: Path, http_port: int, rpc_port: int, writer: str, host: str = "127.0.0.1"
) -> str:
    """influxdb.conf with its data under `data`, listening on `host` only."""
    return _TEMPLATE.format(
        writer=writer, host=host, rpc_port=rpc_port, http_port=http_port, data=data
    )
