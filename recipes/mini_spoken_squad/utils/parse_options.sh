# shellcheck shell=bash
# Command-line option parser for recipe scripts (bash; meant to be *sourced*, not run).
#
#   stage=0          # in the calling script: define every option with its default ...
#   profile=quick
#   . utils/parse_options.sh   # ... then source this file; it consumes the options from "$@"
#
# Rules
#   --foo-bar VALUE  or  --foo-bar=VALUE   sets the existing shell variable foo_bar.
#   An option whose variable is not defined is an error (typos never pass silently).
#   A variable whose default is true/false only accepts true or false.
#   --config FILE    sources FILE (shell assignments) at that point of the command line.
#   --help, -h       prints $help_message (if set) and every option with its current value.
#   Parsing stops at "--" or at the first argument that does not start with "--";
#   those arguments stay in "$@" for the caller.
# Errors print one line to stderr and exit 1.

_po_script="${0##*/}"

_po_list_options() {
  # option names = top-level "name=" assignments of the calling script
  local name
  if [ -f "$0" ]; then
    while IFS= read -r name; do
      [ -n "${!name+x}" ] && [ "${name}" != help_message ] || continue
      if [ -n "${!name}" ]; then
        printf '  --%-24s %s\n' "${name//_/-}" "${!name}"
      else
        printf '  --%-24s ""\n' "${name//_/-}"
      fi
    done < <(sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "$0" | awk '!seen[$0]++')
  fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      [ -n "${help_message:-}" ] && printf '%s\n\n' "${help_message}"
      echo "Usage: ${_po_script} [options]"
      echo "Options (current values):"
      _po_list_options
      exit 0
      ;;
    --)
      shift
      break
      ;;
    --*=*)
      _po_opt="${1%%=*}"
      _po_val="${1#*=}"
      shift
      ;;
    --*)
      _po_opt="$1"
      if [ $# -lt 2 ]; then
        echo "${_po_script}: option ${_po_opt} needs a value" >&2
        exit 1
      fi
      _po_val="$2"
      shift 2
      ;;
    *)
      break
      ;;
  esac

  _po_name="${_po_opt#--}"
  _po_name="${_po_name//-/_}"
  if [ "${_po_name}" = config ] && [ -z "${config+x}" ]; then
    if [ ! -f "${_po_val}" ]; then
      echo "${_po_script}: --config file not found: ${_po_val}" >&2
      exit 1
    fi
    # shellcheck disable=SC1090
    . "${_po_val}"
    continue
  fi
  if ! [[ "${_po_name}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!_po_name+x}" ]; then
    echo "${_po_script}: unknown option ${_po_opt} (see --help)" >&2
    exit 1
  fi
  case "${!_po_name}" in
    true|false)
      if [ "${_po_val}" != true ] && [ "${_po_val}" != false ]; then
        echo "${_po_script}: option ${_po_opt} takes true or false, got '${_po_val}'" >&2
        exit 1
      fi
      ;;
  esac
  printf -v "${_po_name}" '%s' "${_po_val}"
done
unset _po_opt _po_val _po_name
unset -f _po_list_options
