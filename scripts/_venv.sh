# Shared by scripts/run and scripts/test (sourced, not run): create .venv and install the project.
#
# ensure_venv EXTRAS installs `-e .[EXTRAS]` (or `-e .` when EXTRAS is empty) unless a stamp in
# .venv says the same pyproject.toml was already installed with those extras (or a superset).

VENV="${VENV:-.venv}"

_log() { printf '==> %s\n' "$*" >&2; }
_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

_find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3; do
        [[ -n "$candidate" ]] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)' \
            2>/dev/null; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

_stamp_of() { printf '%s/.mobility-installed%s\n' "$VENV" "${1:+-$1}"; }

_project_hash() {
    # Whatever pip would see differently: the project's metadata and the interpreter.
    { cat pyproject.toml; "$VENV/bin/python" -c 'import sys; print(sys.version)'; } \
        | sha256sum | cut -d' ' -f1
}

ensure_venv() {
    local extras="${1:-}"
    if [[ ! -x "$VENV/bin/python" ]]; then
        local python
        python="$(_find_python)" || _die "Python 3.11 or 3.12 is needed (set PYTHON=/path/to/python3.11)"
        _log "creating $VENV with $("$python" --version 2>&1)"
        "$python" -m venv "$VENV" \
            || _die "could not create $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    local hash stamp
    hash="$(_project_hash)"
    # A test install (.[test]) also satisfies a plain one.
    for stamp in "$(_stamp_of "$extras")" "$(_stamp_of test)"; do
        if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
            return 0
        fi
        [[ -z "$extras" ]] || break
    done
    local target="."
    [[ -z "$extras" ]] || target=".[$extras]"
    _log "installing the project into $VENV (pip install -e \"$target\")"
    # PYTHONWARNINGS: setuptools warns about every editable install; it is noise here.
    PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$target" \
        || _die "pip install -e \"$target\" failed"
    printf '%s\n' "$hash" >"$(_stamp_of "$extras")"
}
