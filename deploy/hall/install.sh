#!/usr/bin/env bash
# WindowRate — install or upgrade a hall server (Debian 12, as root, from a checkout):
#
#   sudo deploy/hall/install.sh --host hall-server --host 10.0.0.2 [--admin NAME]
#
#   --host NAME|IP        name or address kiosks use for this server (repeat; first: the
#                         one given to kiosks); default: this machine's name and addresses
#   --admin NAME          create the first administrator (password asked twice, or read
#                         from --admin-password-file FILE)
#   --standby             also install the standby gateway unit
#   --retention DUR       InfluxDB retention, e.g. 800d (default INF: keep every rating)
#   --user NAME           user the services run as (default windowrate, made if missing)
#   --mqtt-port, --mqtt-tls-port, --influx-port, --influx-rpc-port, --server-host,
#   --server-port, --metrics-port, --standby-metrics-port, --timezone   (see docs)
#   --root DIR            install under DIR instead of / (tests); services are not
#                         started, InfluxDB is started only for creating its database
#   --skip-apt            do not install Debian packages (they must be present)
#
# Idempotent: a re-run is an upgrade. The new release is installed beside the running one
# and checked against the configs and a copy of the registry first; if that fails, nothing
# is changed and the old release keeps running. Then: stop gateway and server, migrate the
# registry, convert and complete the configs, switch /opt/windowrate/current, restart
# InfluxDB and the broker, then the gateway(s), then the server. docs/operations.md.
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
APT_PACKAGES=(mosquitto mosquitto-clients influxdb python3-venv)

say() { printf '\033[1m[windowrate]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[windowrate] error:\033[0m %s\n' "$*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

ROOT=/ SKIP_APT=0 ADMIN='' ADMIN_PW_FILE='' SVC_USER=windowrate HOSTS=0 USER_GIVEN=0
PASS=()
need_value() { [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
  case $1 in
    --root) need_value "$1" $#; ROOT=$2; shift 2 ;;
    --skip-apt) SKIP_APT=1; shift ;;
    --admin) need_value "$1" $#; ADMIN=$2; shift 2 ;;
    --admin-password-file) need_value "$1" $#; ADMIN_PW_FILE=$2; shift 2 ;;
    --user) need_value "$1" $#; SVC_USER=$2; USER_GIVEN=1; PASS+=("$1" "$2"); shift 2 ;;
    --standby | --no-standby) PASS+=("$1"); shift ;;
    --host) need_value "$1" $#; HOSTS=1; PASS+=("$1" "$2"); shift 2 ;;
    --mqtt-port | --mqtt-tls-port | --influx-port | --influx-rpc-port | --server-host | \
      --server-port | --metrics-port | --standby-metrics-port | --retention | --timezone)
      need_value "$1" $#; PASS+=("$1" "$2"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root: sudo $0 $*"
[ -f "$REPO/pyproject.toml" ] || die "run from a WindowRate checkout ($REPO is not one)"
R=$(readlink -m "$ROOT")
[ "$R" = / ] && R=''
LIVE=0
[ -z "$R" ] && LIVE=1
ETC=$R/etc/windowrate
PREFIX=$R/opt/windowrate
UPGRADE=0
[ -f "$ETC/server.env" ] && UPGRADE=1
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip' 2>/dev/null ||
  die "Debian's python3 with venv is missing: apt-get install python3-venv (or drop --skip-apt)"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# --- 1. Debian packages -------------------------------------------------------------------
if [ "$SKIP_APT" = 1 ]; then
  for b in mosquitto influxd; do
    command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || die "$b missing: drop --skip-apt or apt-get install ${APT_PACKAGES[*]}"
  done
else
  need=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    say "installing Debian packages: ${need[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
  if [ "$LIVE" = 1 ]; then # the packages' own services would hold 1883 and 8086
    systemctl disable --now mosquitto.service influxdb.service >/dev/null 2>&1 || true
  fi
fi

# The user of an earlier run, unless --user is given now.
if [ "$USER_GIVEN" = 0 ] && [ -f "$ETC/hall.env" ]; then
  was=$(sed -n 's/^WR_HALL_USER="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ETC/hall.env" | tail -n 1)
  SVC_USER=${was:-$SVC_USER}
fi

# --- 2. service user ------------------------------------------------------------------------
if ! id -u "$SVC_USER" >/dev/null 2>&1; then
  [ "$LIVE" = 1 ] || die "user $SVC_USER does not exist (under --root no user is made: give --user)"
  useradd --system --user-group --home-dir /var/lib/windowrate --no-create-home \
    --shell /usr/sbin/nologin --comment "WindowRate services" "$SVC_USER"
  say "created system user $SVC_USER"
fi
if [ "$HOSTS" = 0 ] && [ ! -f "$ETC/hall.env" ]; then
  PASS+=(--host "$(hostname)")
  for ip in $(hostname -I 2>/dev/null || true); do PASS+=(--host "$ip"); done
fi

# --- 3. the release: a venv per source tree, beside the running one -----------------------------
src_hash=$(cd "$REPO" && find . \( -name .git -o -name .venv -o -name var -o -name build \
  -o -name node_modules -o -name '*.egg-info' -o -name __pycache__ -o -name '.*_cache' \
  -o -name .hypothesis -o -name tests -o -name docs \) -prune -o -type f -print0 |
  LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
REL=$PREFIX/releases/$src_hash
if [ ! -f "$REL/.windowrate-ok" ]; then
  say "installing windowrate[server] into $REL (pip log: $REL.pip.log)"
  rm -rf "$REL"
  install -d -m 0755 "$PREFIX/releases" "$TMP/src"
  tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./var --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='.*_cache' --exclude=.hypothesis \
    --exclude=node_modules --exclude=./tests -cf - . | tar -C "$TMP/src" -xf -
  # Debian's python3: the services' users must be able to run the venv's interpreter.
  /usr/bin/python3 -m venv "$REL"
  if ! "$REL/bin/python" -m pip install --disable-pip-version-check "$TMP/src[server]" \
    >"$REL.pip.log" 2>&1; then
    tail -20 "$REL.pip.log" >&2
    rm -rf "$REL"
    die "pip install failed (log: $REL.pip.log): check the network to the package index and retry; nothing else was changed"
  fi
  # The board's browser libraries (npm, not in the wheel): from the checkout's ./wr setup.
  static=$("$REL/bin/python" -I -c 'import server, pathlib; print(pathlib.Path(server.__file__).parent / "static")')
  mods=$REPO/server/static/node_modules
  if [ -f "$mods/echarts/dist/echarts.min.js" ]; then
    install -D -m 0644 "$mods/echarts/dist/echarts.min.js" "$static/node_modules/echarts/dist/echarts.min.js"
    install -d -m 0755 "$static/node_modules/swagger-ui-dist"
    cp -r "$mods/swagger-ui-dist/." "$static/node_modules/swagger-ui-dist/"
  else
    say "warning: $mods has no ECharts (run ./wr setup in the checkout): charts and /docs stay empty"
  fi
  touch "$REL/.windowrate-ok"
fi
NEW=$REL/bin/windowrate
OLD=$(readlink "$PREFIX/current" 2>/dev/null || true)

# --- 4. upgrade: check the new release against configs and a copy of the registry ---------
units() { # the installed units in start order
  for u in windowrate-influxd windowrate-broker windowrate-gateway windowrate-gateway-standby windowrate-server; do
    [ -f "$R/etc/systemd/system/$u.service" ] && echo "$u.service"
  done
  return 0
}
if [ "$UPGRADE" = 1 ]; then
  say "upgrade: checking the new release against $ETC and a copy of the registry"
  "$NEW" hall check --root "${R:-/}" || exit 2
  if [ "$LIVE" = 1 ]; then
    systemctl stop windowrate-server.service windowrate-gateway-standby.service \
      windowrate-gateway.service 2>/dev/null || true
  fi
  if ! "$NEW" hall migrate --root "${R:-/}"; then
    if [ "$LIVE" = 1 ]; then
      # shellcheck disable=SC2046
      systemctl start $(units)
    fi
    exit 2
  fi
fi

# --- 5. configs, secrets, PKI, broker, InfluxDB config, units, registry -------------------
say "configuring $ETC"
"$NEW" hall configure --root "${R:-/}" "${PASS[@]}"

# --- 6. switch to the new release and (re)start in order -----------------------------------
ln -sfn "releases/$src_hash" "$PREFIX/current.tmp"
mv -T "$PREFIX/current.tmp" "$PREFIX/current"
[ "releases/$src_hash" = "$OLD" ] || say "release: $PREFIX/current → releases/$src_hash (was ${OLD:-none})"
if [ "$LIVE" = 1 ]; then
  systemctl daemon-reload
  # shellcheck disable=SC2046
  systemctl enable --quiet $(units) windowrate-backup.timer
  systemctl restart windowrate-influxd.service windowrate-broker.service
  "$NEW" hall influx-init --root /
  for u in windowrate-gateway windowrate-gateway-standby windowrate-server; do
    [ -f "/etc/systemd/system/$u.service" ] && systemctl restart "$u.service"
  done
  systemctl start windowrate-backup.timer
  say "running: $(units | tr '\n' ' ')"
else
  "$NEW" hall influx-init --root "$R" --start
  say "--root $R: services not started (no systemd); units in $R/etc/systemd/system"
fi
# Keep the running and the previous release (a manual roll-back), remove older ones.
for d in "$PREFIX"/releases/*/; do
  name=releases/$(basename "$d")
  [ "$name" = "releases/$src_hash" ] || [ "$name" = "$OLD" ] || rm -rf "$d" "${d%/}.pip.log"
done

# --- 7. the first administrator ------------------------------------------------------------
if [ -n "$ADMIN" ]; then
  if [ -n "$ADMIN_PW_FILE" ]; then
    WR_ADMIN_PASSWORD=$(cat "$ADMIN_PW_FILE") "$NEW" server create-admin --config "$ETC" --username "$ADMIN"
  else
    "$NEW" server create-admin --config "$ETC" --username "$ADMIN"
  fi
fi

cat <<EOF

Done. Next (docs/operations.md):
  - first administrator:  $PREFIX/current/bin/windowrate server create-admin --username NAME
  - first Pi:             $PREFIX/current/bin/windowrate device code --id k-0001   (after device add)
  - check:                $PREFIX/current/bin/windowrate doctor     journalctl -u 'windowrate-*'
EOF
