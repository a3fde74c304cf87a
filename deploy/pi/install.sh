#!/usr/bin/env bash
# WindowRate — provision a Raspberry Pi (Raspberry Pi OS Bookworm) as a window's rating
# terminal (评价器). Run as root from a checkout of the repository:
#
#   sudo deploy/pi/install.sh --hall hz-civic --device k-0001 --broker 10.0.0.1 --ntp 10.0.0.1
#
#   --hall ID          hall id (大厅), [a-z0-9][a-z0-9_-]{0,63}            (required)
#   --device ID        device id (设备编号), same pattern                     (required)
#   --broker HOST[:PORT]  MQTT broker on the hall server, port 1883 if omitted (required)
#   --ntp HOST         hall NTP server for chrony (时间服务器)                  (required)
#   --no-start         install and enable, but do not (re)start the kiosk now
#
# Idempotent: run it again after `git pull` to update; it changes only what differs and
# prints what it did. /etc/windowrate/kiosk.env is written once and then left to the operator.
set -euo pipefail
umask 022 # the venv and the files installed here must be readable by the windowrate user

REPO=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
PI_DIR=$REPO/deploy/pi
PREFIX=/opt/windowrate
VENV=$PREFIX/.venv
ETC=/etc/windowrate
ENV_FILE=$ETC/kiosk.env
KIOSK_USER=windowrate
KIOSK_HOME=/var/lib/windowrate
UNIT=windowrate-kiosk.service
CHRONY_MAIN=/etc/chrony/chrony.conf
CHRONY_CONF=/etc/chrony/conf.d/windowrate.conf
KIOSK_GROUPS=(gpio video input render audio)
# python3-lgpio: gpiozero's pin driver on Bookworm (the venv sees it via --system-site-packages).
# libsdl2-*, libmtdev1, libgbm1, libegl1, libgles2, libdrm2, libasound2: what Kivy's SDL2
# window, mtdev touch input and sound load at run time on the KMS/DRM console.
APT_PACKAGES=(python3-venv python3-lgpio fonts-wqy-microhei espeak-ng chrony alsa-utils
  libsdl2-2.0-0 libsdl2-ttf-2.0-0 libsdl2-image-2.0-0 libsdl2-mixer-2.0-0 libmtdev1
  libgbm1 libegl1 libgles2 libdrm2 libasound2)
ID_RE='^[a-z0-9][a-z0-9_-]{0,63}$'

DONE=()
say() { printf '\033[1m[windowrate]\033[0m %s\n' "$*"; }
did() { DONE+=("$*"); say "$*"; }
warn() { printf '\033[1;33m[windowrate] warning:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[windowrate] error:\033[0m %s\n' "$*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# --- arguments --------------------------------------------------------------------------
HALL='' DEVICE='' BROKER='' NTP='' START=1
value_of() { # $1 option, $2 count of remaining args, $3 the value
  if [ "$2" -lt 2 ] || [ -z "$3" ] || [ "${3#--}" != "$3" ]; then die "$1 needs a value (see --help)"; fi
}
while [ $# -gt 0 ]; do
  case $1 in
    --hall) value_of "$1" $# "${2-}"; HALL=$2; shift 2 ;;
    --device) value_of "$1" $# "${2-}"; DEVICE=$2; shift 2 ;;
    --broker) value_of "$1" $# "${2-}"; BROKER=$2; shift 2 ;;
    --ntp) value_of "$1" $# "${2-}"; NTP=$2; shift 2 ;;
    --hall=*) HALL=${1#*=}; shift ;;
    --device=*) DEVICE=${1#*=}; shift ;;
    --broker=*) BROKER=${1#*=}; shift ;;
    --ntp=*) NTP=${1#*=}; shift ;;
    --no-start) START=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

missing=()
[ -n "$HALL" ] || missing+=(--hall)
[ -n "$DEVICE" ] || missing+=(--device)
[ -n "$BROKER" ] || missing+=(--broker)
[ -n "$NTP" ] || missing+=(--ntp)
if [ ${#missing[@]} -gt 0 ]; then
  usage >&2
  die "missing required argument(s): ${missing[*]} — nothing was changed.
  Example: sudo $0 --hall hz-civic --device k-0001 --broker 10.0.0.1 --ntp 10.0.0.1"
fi
[[ $HALL =~ $ID_RE ]] || die "--hall '$HALL' is not a valid id ([a-z0-9][a-z0-9_-]{0,63})"
[[ $DEVICE =~ $ID_RE ]] || die "--device '$DEVICE' is not a valid id ([a-z0-9][a-z0-9_-]{0,63})"
if [[ $BROKER =~ ^\[([0-9A-Fa-f:.]+)\](:([0-9]{1,5}))?$ ]] ||
  [[ $BROKER =~ ^([A-Za-z0-9][A-Za-z0-9.-]*)(:([0-9]{1,5}))?$ ]]; then
  BROKER_HOST=${BASH_REMATCH[1]}
  BROKER_PORT=${BASH_REMATCH[3]:-1883}
else
  die "--broker '$BROKER' is not HOST, HOST:PORT or [IPv6]:PORT"
fi
if [ "$BROKER_PORT" -lt 1 ] || [ "$BROKER_PORT" -gt 65535 ]; then
  die "--broker port $BROKER_PORT is out of range"
fi
[[ $NTP =~ ^[A-Za-z0-9][A-Za-z0-9.:-]*$ ]] || die "--ntp '$NTP' is not a host name or address"

[ "$(id -u)" = 0 ] || die "run as root: sudo $0 $*"
if [ ! -f "$REPO/pyproject.toml" ] || [ ! -f "$PI_DIR/$UNIT" ]; then
  die "run from a WindowRate checkout ($REPO is not one)"
fi
# shellcheck source=/dev/null
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-unknown}") || codename=unknown
[ "$codename" = bookworm ] || warn "made for Raspberry Pi OS Bookworm; this is '$codename'"

# Replace $2 by the file $1 if they differ (mode $3, owner $4); true if it changed.
put_file() {
  local src=$1 dst=$2 mode=$3 owner=${4:-root:root}
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
    if ! chmod "$mode" "$dst" || ! chown "$owner" "$dst"; then die "cannot set mode/owner of $dst"; fi
    return 1
  fi
  install -D -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$src" "$dst" || die "cannot write $dst"
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
RESTART=0

# --- 1. Debian packages -----------------------------------------------------------------
need=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  did "installed packages: ${need[*]}"
else
  say "Debian packages: all present"
fi

# --- 2. user and groups -----------------------------------------------------------------
for g in "${KIOSK_GROUPS[@]}"; do
  if ! getent group "$g" >/dev/null; then
    groupadd --system "$g"
    did "created group $g"
  fi
done
if ! id -u "$KIOSK_USER" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$KIOSK_HOME" --no-create-home \
    --shell /usr/sbin/nologin --comment "WindowRate kiosk" "$KIOSK_USER"
  did "created system user $KIOSK_USER (home $KIOSK_HOME, no login shell)"
fi
have_groups=" $(id -nG "$KIOSK_USER") "
for g in "${KIOSK_GROUPS[@]}"; do
  if [[ $have_groups != *" $g "* ]]; then
    usermod -aG "$g" "$KIOSK_USER"
    did "added $KIOSK_USER to group $g"
  fi
done
install -d -o "$KIOSK_USER" -g "$KIOSK_USER" -m 0750 "$KIOSK_HOME"

# --- 3. the package in /opt/windowrate/.venv --------------------------------------------
# The source is copied first so that building never writes into the checkout as root.
if [ ! -x "$VENV/bin/python" ]; then
  install -d -m 0755 "$PREFIX"
  python3 -m venv --system-site-packages "$VENV"
  did "created $VENV (with system site packages, for python3-lgpio)"
fi
extras=$(python3 - "$REPO/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    opt = tomllib.load(f)["project"].get("optional-dependencies", {})
print(",".join(e for e in ("kiosk", "pi") if e in opt))
PY
)
spec=windowrate${extras:+[$extras]}
src_hash=$(cd "$REPO" && find . \( -name .git -o -name .venv -o -name var -o -name build \
  -o -name '*.egg-info' -o -name __pycache__ -o -name '.*_cache' -o -name .hypothesis \) -prune \
  -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
stamp=$VENV/.windowrate-source
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$spec $src_hash" ]; then
  say "installing $spec from $REPO into $VENV (pip log: $VENV/pip.log)"
  install -d -m 0755 "$TMP/src"
  tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./var --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='.*_cache' --exclude=.hypothesis \
    -cf - . | tar -C "$TMP/src" -xf -
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade \
    "$TMP/src${extras:+[$extras]}" >"$VENV/pip.log" 2>&1; then
    tail -30 "$VENV/pip.log" >&2
    die "pip install failed (full log: $VENV/pip.log); check the network to the package index and retry"
  fi
  echo "$spec $src_hash" >"$stamp"
  rev=$(git -c safe.directory="$REPO" -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "no git")
  did "installed $spec into $VENV (source $rev)"
  RESTART=1
else
  say "package: up to date in $VENV"
fi
absent=$("$VENV/bin/python" -c '
import importlib.util as u
print(" ".join(m for m in ("kiosk", "kivy", "gpiozero", "lgpio") if u.find_spec(m) is None))')
if [[ " $absent " == *" kiosk "* ]] || [ ! -x "$VENV/bin/windowrate" ]; then
  die "the windowrate package did not install into $VENV (see $VENV/pip.log)"
fi
[[ " $absent " != *" kivy "* ]] ||
  die "Kivy is not installed in $VENV: the repository's pyproject.toml must require it (optional extra 'kiosk' or a dependency)"
[[ " $absent " != *" lgpio "* ]] || warn "python3-lgpio is not visible in $VENV: GPIO buttons will not work"
if put_file "$PI_DIR/README.md" "$PREFIX/README-pi.md" 0644; then did "installed $PREFIX/README-pi.md"; fi

# --- 4. /etc/windowrate -----------------------------------------------------------------
install -d -m 0755 "$ETC"
if [ ! -f "$ENV_FILE" ]; then
  sed -e "s|^WR_KIOSK_HALL=.*|WR_KIOSK_HALL=$HALL|" \
    -e "s|^WR_KIOSK_DEVICE=.*|WR_KIOSK_DEVICE=$DEVICE|" \
    -e "s|^WR_KIOSK_MQTT__HOST=.*|WR_KIOSK_MQTT__HOST=$BROKER_HOST|" \
    -e "s|^WR_KIOSK_MQTT__PORT=.*|WR_KIOSK_MQTT__PORT=$BROKER_PORT|" \
    -e "s|^# WR_KIOSK_MQTT__USERNAME=.*|# WR_KIOSK_MQTT__USERNAME=$DEVICE|" \
    "$REPO/kiosk/kiosk.env.sample" >"$TMP/kiosk.env"
  for line in "WR_KIOSK_HALL=$HALL" "WR_KIOSK_DEVICE=$DEVICE" \
    "WR_KIOSK_MQTT__HOST=$BROKER_HOST" "WR_KIOSK_MQTT__PORT=$BROKER_PORT"; do
    grep -qxF "$line" "$TMP/kiosk.env" || die "kiosk.env.sample has no line for ${line%%=*}"
  done
  install -m 0600 -o root -g root "$TMP/kiosk.env" "$ENV_FILE"
  did "wrote $ENV_FILE (mode 0600; hall=$HALL device=$DEVICE broker=$BROKER_HOST:$BROKER_PORT; no MQTT password set)"
  RESTART=1
else
  chmod 0600 "$ENV_FILE"
  chown root:root "$ENV_FILE"
  for kv in "HALL=$HALL" "DEVICE=$DEVICE" "MQTT__HOST=$BROKER_HOST" "MQTT__PORT=$BROKER_PORT"; do
    have=$(sed -n "s/^WR_KIOSK_${kv%%=*}=//p" "$ENV_FILE" | tail -n 1)
    [ "$have" = "${kv#*=}" ] ||
      warn "kept $ENV_FILE, where WR_KIOSK_${kv%%=*}='$have' (you passed '${kv#*=}'): change it with sudoedit $ENV_FILE"
  done
  say "kept existing $ENV_FILE"
fi
if [ -f "$REPO/kiosk/gpio.toml.sample" ] &&
  put_file "$REPO/kiosk/gpio.toml.sample" "$ETC/gpio.toml.sample" 0644; then
  did "installed $ETC/gpio.toml.sample (copy to gpio.toml and set WR_KIOSK_GPIO_FILE to use buttons)"
fi

# --- 5. data directory and voice prompts ------------------------------------------------
data_dir=$(sed -n 's/^WR_KIOSK_DATA_DIR=//p' "$ENV_FILE" | tail -n 1)
data_dir=${data_dir:-$KIOSK_HOME/kiosk}
[[ $data_dir == /* ]] || data_dir=$KIOSK_HOME/$data_dir
install -d -o "$KIOSK_USER" -g "$KIOSK_USER" -m 0750 "$data_dir" "$data_dir/voice" "$data_dir/voice/custom"
if out=$(cd "$data_dir" && runuser -u "$KIOSK_USER" -- "$VENV/bin/python" -m kiosk.voice "$data_dir/voice" 2>&1); then
  say "voice prompts ready in $data_dir/voice (a hall's own recordings go in $data_dir/voice/custom)"
else
  warn "voice prompts not made: $out"
fi

# --- 6. Kivy config with the duplicate-touch fix ----------------------------------------
install -d -o "$KIOSK_USER" -g "$KIOSK_USER" -m 0750 "$KIOSK_HOME/.kivy"
kivy_ini=$KIOSK_HOME/.kivy/config.ini
if [ -f "$kivy_ini" ] && ! cmp -s "$PI_DIR/kivy-config.ini" "$kivy_ini"; then
  cp -p "$kivy_ini" "$kivy_ini.bak.$(date +%Y%m%d%H%M%S)"
  say "saved the previous $kivy_ini as $kivy_ini.bak.*"
fi
if put_file "$PI_DIR/kivy-config.ini" "$kivy_ini" 0644 "$KIOSK_USER:$KIOSK_USER"; then
  did "installed $kivy_ini (touch input from mtdev only: the duplicate-touch fix)"
  RESTART=1
fi

# --- 7. chrony pointed at the hall server -----------------------------------------------
cat >"$TMP/chrony.conf" <<EOF
# Written by WindowRate deploy/pi/install.sh: the hall server is the time source.
server $NTP iburst prefer
# Step the clock whenever it is off by more than 1 s, at any time, not only in the first
# updates: a Pi has no battery-backed clock and boots with a stale time. The kiosk keeps
# press times right across steps (monotonic clock) and marks unsynced ones.
makestep 1 -1
EOF
chrony_changed=0
if put_file "$TMP/chrony.conf" "$CHRONY_CONF" 0644; then
  did "wrote $CHRONY_CONF (server $NTP iburst prefer; makestep 1 -1)"
  chrony_changed=1
fi
# Debian's chrony.conf reads conf.d at its top and says `makestep 1 3` further down; the last
# makestep wins, so that line is commented out or ours would never apply.
if [ -f "$CHRONY_MAIN" ] && grep -qE '^[[:space:]]*makestep[[:space:]]' "$CHRONY_MAIN"; then
  sed -i -E 's|^([[:space:]]*makestep[[:space:]].*)$|# \1  # off: WindowRate sets makestep in conf.d/windowrate.conf|' "$CHRONY_MAIN"
  did "commented out makestep in $CHRONY_MAIN (it would override conf.d/windowrate.conf)"
  chrony_changed=1
fi
if [ "$chrony_changed" = 1 ]; then
  systemctl enable chrony.service >/dev/null 2>&1 || true
  systemctl restart chrony.service
  did "restarted chrony"
fi

# --- 7b. journald size limits (the SD card) ---------------------------------------------
if put_file "$PI_DIR/journald-windowrate.conf" /etc/systemd/journald.conf.d/windowrate.conf 0644; then
  systemctl restart systemd-journald.service
  did "limited the journal to 64 MB, 512 MB kept free (/etc/systemd/journald.conf.d/windowrate.conf)"
fi
if [ -n "$(findmnt -n -o TARGET --target "$data_dir" 2>/dev/null | grep -vx /)" ]; then
  say "outbox directory $data_dir is on its own file system ($(findmnt -n -o SOURCE --target "$data_dir"))"
else
  say "outbox directory $data_dir shares the root file system (README: 'The data directory on its own partition')"
fi

# --- 8. boot to the console with the kiosk on tty1 --------------------------------------
REBOOT=0
if [ "$(systemctl get-default)" != multi-user.target ]; then
  systemctl set-default multi-user.target
  did "set the default boot target to multi-user.target (console; the kiosk draws the screen)"
fi
dm=$(readlink -f /etc/systemd/system/display-manager.service 2>/dev/null || true)
if [ -n "$dm" ] && [ -e "$dm" ]; then
  dm_unit=$(basename "$dm")
  systemctl is-active --quiet "$dm_unit" && REBOOT=1
  systemctl disable "$dm_unit"
  did "disabled the desktop's display manager $dm_unit (it would hold the screen)"
fi
if [ "$(systemctl is-enabled getty@tty1.service 2>/dev/null || true)" = enabled ]; then
  systemctl disable getty@tty1.service
  did "disabled the login prompt on tty1 (the kiosk runs there; use SSH or tty2)"
fi

# --- 9. systemd unit --------------------------------------------------------------------
if put_file "$PI_DIR/$UNIT" "/etc/systemd/system/$UNIT" 0644; then
  systemctl daemon-reload
  did "installed /etc/systemd/system/$UNIT"
  RESTART=1
fi
if ! systemctl is-enabled --quiet "$UNIT"; then
  systemctl enable "$UNIT"
  did "enabled $UNIT (starts at boot)"
fi
if [ "$REBOOT" = 1 ]; then
  say "a desktop session is running on the screen: reboot to start the kiosk (sudo reboot)"
elif [ "$START" = 0 ]; then
  say "--no-start: the kiosk starts at the next boot (or: systemctl start $UNIT)"
elif [ "$RESTART" = 1 ] || ! systemctl is-active --quiet "$UNIT"; then
  # --no-block: Type=notify would otherwise wait here until the UI is up.
  systemctl restart --no-block "$UNIT"
  did "(re)started $UNIT"
fi

# --- summary ----------------------------------------------------------------------------
echo
if [ ${#DONE[@]} -eq 0 ]; then
  say "nothing to change: this Pi was already set up"
else
  say "done; changes made:"
  printf '  - %s\n' "${DONE[@]}"
fi
cat <<EOF

Next:
  - MQTT password (if the broker needs one): sudoedit $ENV_FILE, then systemctl restart $UNIT
  - check:  systemctl status $UNIT     journalctl -u $UNIT -f     chronyc sources
EOF
