# Sourced by scripts/*: create .venv with the project installed (editable) and the given extras.
# Re-installs only when pyproject.toml changed since the last install.
VENV="${VENV:-$PWD/.venv}"
ensure_venv() {
  local extras="${1:-}"
  local py="${PYTHON:-python3}"
  if [ ! -x "$VENV/bin/python" ]; then
    "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
  local stamp="$VENV/.installed-${extras:-base}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    local spec="."
    [ -n "$extras" ] && spec=".[$extras]"
    "$VENV/bin/python" -m pip install -q -e "$spec"
    touch "$stamp"
  fi
}
