"""The chair market's benchmarks in one run: agent-steps/s of ``simulate`` at N = 10⁶ (truthful advocates, no TTC at
reset), TTC's time at 10⁴, 10⁵, 10⁶ agents (type graph, 625 chair types; compiled once per N, timed on a second
call), and a same-work plain-Python reference of one market round (random matching, swap when both gain) per
agent-step.  python scripts/bench_chairs.py [--quick]"""

import random
import sys
import time

import jax
import jax.numpy as jnp

from coasejax.scenarios import chairs as ch
from coasejax.scenarios import get, rollout


def market(n, core=False):
    return ch.Params(honesty=jnp.float32(1.0), enforcement=jnp.float32(1.0), n=n, grid=ch._grid(n), core=core)


def bench_simulate(n=1_000_000, rounds=8):
    sc, p = get("chairs"), market(n)
    act = lambda k, p_, s, o: ch.truthful(k, p_, s)  # noqa: E731
    s0 = jax.jit(lambda k: ch.reset(k, p))(jax.random.PRNGKey(0))
    run = jax.jit(lambda s: rollout(sc, act, jax.random.PRNGKey(1), s, p, rounds))
    jax.block_until_ready(run(s0))
    t0 = time.perf_counter()
    jax.block_until_ready(run(s0))
    return n * rounds / (time.perf_counter() - t0)


def bench_ttc(n):
    p = market(n)
    s = jax.jit(lambda k: ch.reset(k, p))(jax.random.PRNGKey(0))
    f = jax.jit(lambda s: ch.core_of(p, s))
    jax.block_until_ready(f(s))
    t0 = time.perf_counter()
    r = jax.block_until_ready(f(s))
    return time.perf_counter() - t0, int(r.iterations)


def bench_python(n=2000, rounds=20):
    """The same work in plain Python: n agents, 4 attributes in 0..4, ideal points and weights, each round a random
    matching (a shuffle) and a swap when both strictly gain."""
    rng = random.Random(0)
    ideal = [[rng.randrange(5) for _ in range(4)] for _ in range(n)]
    w = []
    for _ in range(n):
        e = [rng.expovariate(1.0) for _ in range(4)]
        w.append([x / sum(e) for x in e])
    chair = [[rng.randrange(5) for _ in range(4)] for _ in range(n)]
    u = lambda i, c: sum(w[i][k] * (4 - abs(c[k] - ideal[i][k])) for k in range(4))  # noqa: E731
    order = list(range(n))
    t0 = time.perf_counter()
    for _ in range(rounds):
        rng.shuffle(order)
        for q in range(0, n, 2):
            i, j = order[q], order[q + 1]
            if u(i, chair[j]) > u(i, chair[i]) and u(j, chair[i]) > u(j, chair[j]):
                chair[i], chair[j] = chair[j], chair[i]
    return n * rounds / (time.perf_counter() - t0)


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    print(f"backend {jax.default_backend()}, {jax.device_count()} device(s)")
    print(f"simulate N=1e6: {bench_simulate(rounds=2 if quick else 8):.3e} agent-steps/s")
    print(f"plain-Python reference (N=2000): {bench_python(rounds=5 if quick else 20):.3e} agent-steps/s")
    for n in (10**4, 10**5) if quick else (10**4, 10**5, 10**6):
        sec, it = bench_ttc(n)
        print(f"TTC N={n:.0e}: {sec:.3f} s, {it} iterations ({1e3 * sec / it:.3f} ms each)")
