#!/usr/bin/env bash
# Mutation testing of coasejax's mechanisms, rule layers and engine accounting with mutmut 2 (docs/mutation.md).
#
#   pip install "mutmut<3"
#   git worktree add /tmp/mut-run HEAD            # never mutate the checkout you work in
#   scripts/mutation.sh /tmp/mut-run /tmp/mut-out [RATE_MECH] [RATE_RULES] [SEED] [RATE_ACCOUNTING]
#
# mutmut 2 writes each mutant to disk and runs the test command below as a fresh subprocess, so no jit-compiled code of
# the unmutated function survives into a mutant's run (mutmut 3 runs tests in forked children of one process). The
# package must be imported from the worktree, not from an editable install elsewhere: PYTHONPATH=WORKTREE.
#
# Sampling: a mutant is tested iff sha256(SEED:file:source line:index) / 2^256 < RATE of its module (RATE 1 = all);
# the key holds no line number, so the same mutants are drawn before and after edits elsewhere in a file. The others
# are marked "skipped". Defaults: all rates 1 (every mutant), SEED=14. RATE_ACCOUNTING 0 leaves the accounting out.
#
# Test selection: per mutated file, the tests that exercise it (below); a mutant they let live is then run against
# tests/test_mutants.py if present (logged in OUTDIR/killed_by_test_mutants.txt, so the score with and without that
# file comes from one run). pytest -x stops at the first failure. A run longer than its per-mutant timeout (MUT_TIMEOUT_MECH / MUT_TIMEOUT_RULES
# seconds) counts as a timeout (logged in OUTDIR/timeouts.txt; mutmut itself records it as killed).
#
# Results in OUTDIR: summary.txt (killed/survived/timeout/skipped per module), survivors.txt (each surviving mutant's
# diff), mutmut.log, timeouts.txt, errors.txt (mutants whose run collected no tests), mutmut-cache (mutmut's database).
# Not run in CI.
set -uo pipefail

SELF=$(readlink -f "$0")

select_tests() {  # the test selection for one mutated file (paths relative to the worktree)
  local f=$1 k
  case "$f" in
    coasejax/mechanisms/nash.py) k="nash or every_mechanism" ;;
    coasejax/mechanisms/clarke.py) k="clarke or every_mechanism" ;;
    coasejax/mechanisms/lindahl.py) k="lindahl or every_mechanism" ;;
    coasejax/mechanisms/alternating.py) k="alternating or every_mechanism or per_round" ;;
    coasejax/mechanisms/base.py | coasejax/mechanisms/__init__.py) k="" ;;
    coasejax/mechanisms/assurance.py)
      echo "tests/test_mechanisms.py tests/test_coalitions.py -k" \
        "'every_mechanism or mixed_equilibrium or dominant_assurance or failed_contracts'"
      return ;;
    coasejax/rules/base.py | coasejax/rules/__init__.py)
      echo "tests/test_rules.py -k 'inner_layers or budget_rule or cap_binds or red_line'"; return ;;
    coasejax/rules/state.py)
      echo "tests/test_rules.py -k 'budget_rule or pigouvian or tax_paid or cap_binds or cap_share'"; return ;;
    coasejax/rules/individual.py)
      echo "tests/test_rules.py -k 'red_line or reservation or altruism or budget_rule'"; return ;;
    coasejax/rules/provider.py)
      echo "tests/test_rules.py -k 'market_share or conduct or protocol'"; return ;;
    coasejax/envs/accounting.py)
      echo "tests/test_coase_engine.py -k 'money or clarke_deficit or conservation or settlement'"; return ;;
    *) echo "tests"; return ;;
  esac
  if [ -n "$k" ]; then echo "tests/test_mechanisms.py -k '$k'"; else echo "tests/test_mechanisms.py"; fi
}

if [ "${1:-}" = "--baseline" ]; then
  # mutmut times one unmutated run and kills a mutant's run after 10x that time: 30 s here, so its own timer
  # (300 s) stays above ours; the unmutated selections are checked in the main script instead.
  sleep 30
  exit 0
fi

if [ "${1:-}" = "--one" ]; then  # the runner mutmut calls for one mutant: --one FILE LINE_NUMBER INDEX
  f=$2 id="$2|$3|$4"
  sel=$(select_tests "$f")
  case "$f" in coasejax/rules/*) t=${MUT_TIMEOUT_RULES:-280} ;; *) t=${MUT_TIMEOUT_MECH:-150} ;; esac
  pytest="python -m pytest -x -q -p no:cacheprovider -o addopts=''"
  eval "timeout -k 5 $t $pytest $sel" > "$MUT_OUT/last.log" 2>&1
  rc=$?
  if [ $rc = 0 ] && [ -f tests/test_mutants.py ]; then
    # the module's own tests let it live: does tests/test_mutants.py kill it? (logged, so both scores are known)
    eval "timeout -k 5 $t $pytest tests/test_mutants.py" > "$MUT_OUT/last.log" 2>&1
    rc=$?
    [ $rc != 0 ] && echo "$id" >> "$MUT_OUT/killed_by_test_mutants.txt"
  fi
  case $rc in
    0) exit 0 ;;  # survived
    124 | 137) echo "$id" >> "$MUT_OUT/timeouts.txt"; exit 1 ;;
    5) echo "$id no tests collected: $sel" >> "$MUT_OUT/errors.txt"; exit 0 ;;
    *) exit 1 ;;  # killed: failures (1), and a mutant that breaks collection or import (2, 3, 4)
  esac
fi

WT=$(readlink -f "${1:?usage: scripts/mutation.sh WORKTREE OUTDIR [RATE_MECH] [RATE_RULES] [SEED] [RATE_ACCOUNTING]}")
OUT=$(mkdir -p "${2:?OUTDIR}" && readlink -f "$2")
RATE_MECH=${3:-1} RATE_RULES=${4:-1} SEED=${5:-14} RATE_ACC=${6:-1}
export MUT_OUT=$OUT PYTHONPATH=$WT JAX_PLATFORMS=cpu XLA_PYTHON_CLIENT_PREALLOCATE=false
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" OMP_NUM_THREADS=1
# a persistent compilation cache keyed by the HLO: a mutant's changed function compiles afresh, the rest is reused
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/mut-jaxcache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
cd "$WT" || exit 1
for log in timeouts errors killed_by_test_mutants; do  # a resumed run keeps the logs of the mutants it reuses
  if [ "${MUT_RESUME:-0}" = 1 ]; then touch "$OUT/$log.txt"; else : > "$OUT/$log.txt"; fi
done
where=$(python -c "import coasejax; print(coasejax.__file__)")
case "$where" in "$WT"/*) ;; *) echo "coasejax imports from $where, not $WT" >&2; exit 1 ;; esac

paths="coasejax/mechanisms,coasejax/rules"
[ -f coasejax/envs/accounting.py ] && [ "$RATE_ACC" != 0 ] && paths="$paths,coasejax/envs/accounting.py"

# mutmut's hook: sampling and the per-file test command (written into the throwaway worktree only)
cat > mutmut_config.py <<EOF
import hashlib

RATES = {"coasejax/mechanisms/": $RATE_MECH, "coasejax/rules/": $RATE_RULES, "coasejax/envs/": $RATE_ACC}


def pre_mutation(context):
    f = context.filename
    rate = next((r for p, r in RATES.items() if f.startswith(p)), 1.0)
    key = f"$SEED:{f}:{context.mutation_id.line}:{context.mutation_id.index}".encode()
    if int(hashlib.sha256(key).hexdigest(), 16) / 2**256 >= rate:
        context.skip = True
        return
    context.config.test_command = (
        f"bash $SELF --one {f} {context.mutation_id.line_number} {context.mutation_id.index}")
EOF

# MUT_RESUME=1 keeps mutmut's cache and OUTDIR's logs: mutants already tested against the same tests keep their
# status (a run restarted with other rates, into the same OUTDIR; the summary counts only the current sample)
if [ "${MUT_RESUME:-0}" = 1 ] && [ -f .mutmut-cache ]; then  # the skipped may be drawn this time
  python -c "import sqlite3; db = sqlite3.connect('.mutmut-cache'); db.execute(\"update Mutant set status = 'untested' where status = 'skipped'\"); db.commit()"
else
  rm -f .mutmut-cache
fi
echo "mutating $paths in $WT at $(git rev-parse --short HEAD) (rates: mechanisms $RATE_MECH, rules $RATE_RULES," \
  "accounting $RATE_ACC; seed $SEED) at $(date -u)" \
  | tee "$OUT/mutmut.log"
mutmut run --paths-to-mutate "$paths" --tests-dir tests --runner "bash $SELF --baseline" \
  -m 100 -b 10000 --simple-output --no-progress >> "$OUT/mutmut.log" 2>&1
echo "finished at $(date -u)" >> "$OUT/mutmut.log"
cp .mutmut-cache "$OUT/mutmut-cache"

python - "$OUT" "$SEED" "$RATE_MECH" "$RATE_RULES" "$RATE_ACC" <<'EOF' > "$OUT/summary.txt"
import collections, hashlib, sqlite3, sys
out, seed = sys.argv[1], sys.argv[2]
rates = {"coasejax/mechanisms/": float(sys.argv[3]), "coasejax/rules/": float(sys.argv[4]),
         "coasejax/envs/": float(sys.argv[5])}


def in_sample(f, line, idx):  # the same draw as mutmut_config.pre_mutation
    rate = next((r for p, r in rates.items() if f.startswith(p)), 1.0)
    return int(hashlib.sha256(f"{seed}:{f}:{line}:{idx}".encode()).hexdigest(), 16) / 2**256 < rate


timeouts = {tuple(l.strip().split("|")) for l in open(f"{out}/timeouts.txt") if l.strip()}
by_extra = {tuple(l.strip().split("|")) for l in open(f"{out}/killed_by_test_mutants.txt") if l.strip()}
db = sqlite3.connect(f"{out}/mutmut-cache")
rows = db.execute("select s.filename, l.line_number, m.\"index\", m.status, m.id, l.line from Mutant m "
                  "join Line l on m.line = l.id join SourceFile s on l.sourcefile = s.id").fetchall()
names = {"ok_killed": "killed", "ok_suspicious": "killed", "bad_survived": "survived", "bad_timeout": "timeout",
         "skipped": "skipped", "untested": "untested"}
count = collections.defaultdict(collections.Counter)
survivors = []
for f, line, idx, status, pk, text in rows:
    s = names.get(status, status) if in_sample(f, text, idx) else "skipped"
    if s == "killed" and (f, str(line), str(idx)) in timeouts:
        s = "timeout"
    count[f][s] += 1
    if s == "killed" and (f, str(line), str(idx)) in by_extra:
        count[f]["extra"] += 1
    if s == "survived":
        survivors.append((f, line, pk))
print("killed/timeout count as detected; score = (killed + timeout) / tested; 'w/o' = the same without the kills")
print("that only tests/test_mutants.py made (its column 'by t_m')")
print(f"{'module':40s} killed survived timeout tested skipped  score  by t_m  w/o")
tot = collections.Counter()
for f in sorted(count):
    c = count[f]; tot.update(c)
    tested = c["killed"] + c["survived"] + c["timeout"]
    score = (c["killed"] + c["timeout"]) / tested if tested else float("nan")
    wo = (c["killed"] + c["timeout"] - c["extra"]) / tested if tested else float("nan")
    print(f"{f:40s} {c['killed']:6d} {c['survived']:8d} {c['timeout']:7d} {tested:6d} {c['skipped']:7d} {score:6.2f}"
          f" {c['extra']:6d} {wo:5.2f}")
tested = tot["killed"] + tot["survived"] + tot["timeout"]
print(f"{'total':40s} {tot['killed']:6d} {tot['survived']:8d} {tot['timeout']:7d} {tested:6d} {tot['skipped']:7d} "
      f"{(tot['killed'] + tot['timeout']) / max(tested, 1):6.2f} {tot['extra']:6d} "
      f"{(tot['killed'] + tot['timeout'] - tot['extra']) / max(tested, 1):5.2f}")
with open(f"{out}/survivor_ids.txt", "w") as fh:
    for f, line, pk in survivors:
        fh.write(f"{pk} {f}:{line + 1}\n")
EOF
: > "$OUT/survivors.txt"
while read -r pk where; do
  { echo "== mutant $pk ($where)"; mutmut show "$pk" 2>&1; echo; } >> "$OUT/survivors.txt"
done < "$OUT/survivor_ids.txt"
cat "$OUT/summary.txt"
