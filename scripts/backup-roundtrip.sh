#!/usr/bin/env bash
# Backup/restore round trip through the harness with the release binaries (build them first:
# cargo build --release -p petkv -p petkv-harness): 200 puts, a backup, 20 more puts, the set
# stopped and its volumes deleted, the backup restored on petkv-0, the set started again; then
# the restored data is read back and a corrupt and a truncated backup are refused.
set -euo pipefail
cd "$(dirname "$0")/.."
H=target/release/petkv-harness; P=target/release/petkv
S=$(mktemp -d /tmp/petkv-rt.XXXX)
trap '$H down --delete-volumes --state-dir "$S" >/dev/null 2>&1 || true; rm -rf "$S"' EXIT
$H up --replicas 3 --state-dir "$S" > "$S/up1.log" 2>&1 &
UP=$!
for i in $(seq 1 120); do $H status --state-dir "$S" 2>/dev/null | grep -q 'leader' && break; sleep 0.5; done
$H status --state-dir "$S" | tail -8
EP=$(python3 -c "import json,sys; d=json.load(open('$S/running.json')); print(','.join(p['client_addr'] for p in d['pods'].values()))" 2>/dev/null || true)
echo "endpoints: $EP"
for i in $(seq 1 200); do $P put "k$i" "v$i" --endpoints "$EP" >/dev/null; done
echo "200 puts done"
$P backup --endpoints "$EP" --out "$S/backup.snap"
for i in $(seq 201 220); do $P put "k$i" "after-backup" --endpoints "$EP" >/dev/null; done
echo "20 more puts after the backup"
$H down --delete-volumes --state-dir "$S"
wait $UP || true
$P restore --from "$S/backup.snap" --hostname petkv-0 --data-dir "$S/data-petkv-0"
$H up --replicas 3 --state-dir "$S" > "$S/up2.log" 2>&1 &
UP=$!
# The addresses can change between two `up`s: wait for the new controller's running.json.
for i in $(seq 1 120); do
  python3 -c "import json; assert json.load(open('$S/running.json'))['controller_pid'] == $UP" 2>/dev/null && break
  sleep 0.5
done
EP=$(python3 -c "import json,sys; d=json.load(open('$S/running.json')); print(','.join(p['client_addr'] for p in d['pods'].values()))")
echo "endpoints after the restore: $EP"
for i in $(seq 1 60); do $P get k1 --endpoints "$EP" >/dev/null 2>&1 && break; sleep 0.5; done
$H status --state-dir "$S" | tail -8
$P get k200 --endpoints "$EP"
$P get k201 --endpoints "$EP" || echo "k201 (written after the backup) is absent: exit $?"
echo "keys after restore: $($P scan --prefix k --all --endpoints "$EP" --output json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["kvs"]))')"
python3 -c "b=bytearray(open('$S/backup.snap','rb').read()); b[500]^=0xff; open('$S/bad.snap','wb').write(b)"
$P restore --from "$S/bad.snap" --hostname petkv-0 --data-dir "$S/fresh" || echo "corrupt backup refused: exit $?"
head -c 3000 "$S/backup.snap" > "$S/short.snap"
$P restore --from "$S/short.snap" --hostname petkv-0 --data-dir "$S/fresh" || echo "truncated backup refused: exit $?"
$H down --delete-volumes --state-dir "$S"
wait $UP || true
