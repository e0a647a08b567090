#!/usr/bin/env bash
# Command-line options for recipe scripts, in the style of Kaldi/ESPnet/FunASR recipes
# (an independent implementation). Source it after the defaults are set:
#
#   stage=0; nj=4; download=true
#   . utils/parse_options.sh
#
#   --name value, --name=value   set the existing shell variable "name"; dashes in the option
#                                name become underscores (--stop-stage == --stop_stage)
#   --config FILE                if the script has no variable called "config": source FILE
#                                (shell assignments) first; otherwise it sets $config like any option
#   --help, -h                   print $help_message (when the script defines one) and exit 0
#   --                           end of options; everything after it stays in "$@"
#
# An option whose variable the script did not define is an error (exit 1) - a typo must not be
# ignored. A variable whose current value is true or false only accepts true or false.
# Parsing stops at the first argument that does not start with "--": positional arguments are
# left in "$@" for the script (the caller's "$@" is shifted, this file is sourced).

_po_die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --)
      shift
      break
      ;;
    -h | --help)
      if [ -n "${help_message:-}" ]; then
        printf '%s\n' "$help_message"
      else
        echo "${0##*/}: no help text; options are the variables set at the top of the script"
      fi
      exit 0
      ;;
    --?*=*)
      _po_name=${1%%=*}
      _po_value=${1#*=}
      shift
      ;;
    --?*)
      [ $# -ge 2 ] || _po_die "option $1 needs a value"
      _po_name=$1
      _po_value=$2
      shift 2
      ;;
    *)
      break
      ;;
  esac
  _po_name=${_po_name#--}
  _po_name=${_po_name//-/_}
  [[ $_po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || _po_die "invalid option name --$_po_name"

  if [ "$_po_name" = config ] && [ -z "${config+set}" ]; then
    [ -f "$_po_value" ] || _po_die "--config: no such file: $_po_value"
    # shellcheck disable=SC1090
    . "$_po_value" || _po_die "--config: error while reading $_po_value"
    continue
  fi
  if [ -z "${!_po_name+set}" ]; then
    _po_die "unknown option --$_po_name (no variable '$_po_name' in this script; see --help)"
  fi
  case "${!_po_name}" in
    true | false)
      case "$_po_value" in
        true | false) ;;
        *) _po_die "--$_po_name takes true or false, not '$_po_value'" ;;
      esac
      ;;
  esac
  printf -v "$_po_name" '%s' "$_po_value"
done
unset _po_name _po_value
unset -f _po_die
true
