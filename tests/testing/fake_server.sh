#!/bin/sh
# Stands in for fanin_server in the helper's own test: honours --ready_file,
# --grpc_address and --listen (port 0 becomes a pid-derived port, so a restart
# without pinned ports would report a different one), exits 0 on SIGTERM, and
# --fake_exit=N exits at once with N.
ready=""
grpc="127.0.0.1:50051"
listens=""
for arg in "$@"; do
  case "$arg" in
    --ready_file=*) ready="${arg#--ready_file=}" ;;
    --grpc_address=*) grpc="${arg#--grpc_address=}" ;;
    --listen=*) listens="$listens ${arg#--listen=}" ;;
    --fake_exit=*) exit "${arg#--fake_exit=}" ;;
  esac
done
# Trap before the ready file exists: a SIGTERM may follow it at once.
child=""
trap 'kill "$child" 2>/dev/null; exit 0' TERM
pick() {
  case "$1" in
    *:0) echo "${1%:0}:$(($$ % 20000 + 20000))" ;;
    *) echo "$1" ;;
  esac
}
{
  echo "grpc $(pick "$grpc")"
  for l in $listens; do
    case "$l" in
      *=*) name="${l%%=*}" addr="${l#*=}" ;;
      *) name=default addr="$l" ;;
    esac
    echo "listen $name $(pick "$addr")"
  done
} >"$ready.tmp"
mv "$ready.tmp" "$ready"
sleep 600 &
child=$!
wait "$child"
