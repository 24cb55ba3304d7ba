"""The Ray executor: same results as inline, placement, capacity, lean cards, no leaks."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rsd_ray.config import ConfigError, load_run
from rsd_ray.rack.controller import Controller
from rsd_ray.rack.epoch import Needs
from rsd_ray.report.results import build, without_wall_clock
from tests.conftest import accounted, run_doc, with_token_times
from tests.processes import descendants, marked, processes

pytestmark = pytest.mark.slow          # the second tier: Ray, servers, installs, real clients

HERE = Path(__file__).parent


def eventually(condition, timeout=15.0):
    """Poll a condition on Ray's eventually consistent resource view, within a bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def comparable(doc):
    doc = without_wall_clock(doc)
    doc["emulator"].pop("executor")
    return doc


@pytest.mark.parametrize("rack,model,tp,duration", [("mini", "tiny-llama", 2, 2.0), ("atom-server", "llama3-8b", 4, 3.0),
                                                    ("mini", "tiny-llama", 8, 1.0)])     # one group over two servers
def test_ray_results_equal_inline(ray_session, rack, model, tp, duration):
    spec = load_run(None, rack=rack, model=model, tp=tp, duration_s=duration, workload="poisson",
                    router={"policy": "power_of_two"})
    on_ray = with_token_times(*run_doc(spec, "ray"))
    inline = with_token_times(*run_doc(spec))
    assert on_ray["emulator"]["executor"] == "ray"
    assert comparable(on_ray) == comparable(inline)
    assert on_ray["requests"]["completed"] > 0


def test_a_degraded_link_on_the_gateways_path_is_the_same_on_ray_and_inline(ray_session):
    """A gateway core in front of the mini rack, and the ToR's link to server 1's NIC down to 0.1 % at
    0.3 s: the requests sent to server 1 after it cross it slower — on Ray as inline (the controller prices
    the gateway's network on its own view of the links, which the fault degrades on either executor)."""
    from rsd_ray.rack.faults import Fault
    docs = []
    for executor, faults in (("ray", True), ("inline", True), ("inline", False)):
        spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=1.0, workload="poisson",
                        router={"policy": "round_robin", "gateway_cores": 1})
        controller = Controller(spec, executor=executor)
        if faults:
            controller.inject([Fault("link", 0, 0.3, value=0.1, link="tor->nic1")])
        outcome = controller.run()
        docs.append(with_token_times(build(outcome), outcome))
    on_ray, inline, healthy = docs
    assert comparable(on_ray) == comparable(inline)
    assert inline["summary"]["mean_ttft_ms"] > healthy["summary"]["mean_ttft_ms"]


def test_two_hosts_run_over_quiet_epochs_of_a_closed_loop_and_equal_inline(ray_session):
    """A light closed loop on two servers (two host actors): the controller lets both hosts run to the
    earliest boundary at which either could see a request finish (``EpochOut.quiet_until``), so it calls
    them far less often than once an epoch — and every figure, every token time, equals inline's."""
    spec = load_run(None, rack="mini", model="llama3-8b", tp=4, duration_s=8.0,        # an instance a server
                    workload={"arrival": "closed", "concurrency": 3, "per_server": False,
                              "input": {"dist": "fixed", "mean": 64},
                              "output": {"dist": "uniform", "min": 30, "max": 300}})
    calls = []

    class Calls:
        needs = Needs()

        def __call__(self, out, in_flight):
            calls.append(out.t_end)

    controller = Controller(spec, executor="ray")
    outcome = controller.run([Calls()])
    on_ray, inline = with_token_times(build(outcome), outcome), with_token_times(*run_doc(spec))
    assert comparable(on_ray) == comparable(inline)
    assert on_ray["requests"]["completed"] > 0
    assert len(calls) < on_ray["emulator"]["epochs"] / 2


def test_plain_calls_and_compiled_graphs_agree(ray_session):
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=1.0)
    fast = build(Controller(spec, executor="ray", fast=True).run())
    plain = build(Controller(spec, executor="ray", fast=False).run())
    assert comparable(fast) == comparable(plain)


def test_card_processes_are_lean_and_everything_is_released(ray_session):
    ray = ray_session
    total = ray.cluster_resources()["atom_card"]

    def free():
        return ray.available_resources().get("atom_card", 0)
    assert eventually(lambda: free() == total)               # earlier runs released theirs
    controller = Controller(load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=0.5), executor="ray")
    procs = controller.executor.processes()
    assert len(procs) == 8 and len({p["pid"] for p in procs}) == 8
    assert all(p["heavy_modules"] == [] for p in procs), procs
    assert eventually(lambda: free() == total - 8)
    controller.run()
    assert eventually(lambda: free() == total)
    from ray.util.placement_group import placement_group_table
    assert all(pg["state"] == "REMOVED" for pg in placement_group_table().values())


def test_a_rack_too_big_for_the_cluster_is_refused_up_front(ray_session):
    with pytest.raises(ConfigError, match=r"needs 224 atom_card resources \(14 servers × 16 cards\); "
                                          r"the Ray cluster has 16"):
        Controller(load_run(None, rack="rsd-rack"), executor="ray")


def test_the_controller_actor_is_named_findable_and_feeds_a_dashboard(ray_session):
    from rsd_ray.actors.controller_actor import find_controller
    from rsd_ray.actors.session import run_on_ray
    seen, frames = [], []
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=1.0)
    outcome = run_on_ray(spec, [lambda out, n: seen.append(find_controller())], show=frames.append)
    assert seen and outcome.executor == "ray"
    assert frames and frames[-1]["header"]["rack"] == "mini" and len(frames[-1]["instances"]) == 4
    assert [c["card"] for c in frames[-1]["cards"]] == list(range(8))


def test_two_nodes_one_server_each_and_a_lost_node_is_a_failure_the_run_survives():
    res = subprocess.run([sys.executable, str(HERE / "ray_cluster_script.py")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert [list(n) for n in seen["server_nodes"]] == [[n] for n in seen["node_ids"]]   # one server per node
    assert seen["equal_inline"]
    assert isinstance(seen["joined"], dict), seen["joined"]                            # rsd-ray run --address
    assert seen["joined"]["executor"] == "ray" and seen["joined"]["cards"] == 8
    assert isinstance(seen["embedded"], dict), seen["embedded"]                        # private, not this cluster
    assert seen["embedded"]["cards"] == 8 and seen["cluster_cards_after"] == 8
    lost = seen["lost"]
    assert lost["status"] == "completed", lost
    assert [f["kind"] for f in lost["failures"]] == ["host"]             # the server on the lost node
    req = lost["requests"]
    assert accounted(lost)
    assert req["retried"] > 0 and req["completed"] > 0          # moved to server 0's instances and served there
    assert seen["lost_after_s"] < 120


def _raylets():
    out = subprocess.run(["pgrep", "-f", "raylet"], capture_output=True, text=True).stdout
    return set(out.split())


def test_rsd_ray_run_with_no_arguments_uses_embedded_ray_and_leaves_nothing(tmp_path):
    before = _raylets()
    out = tmp_path / "run.json"
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--no-progress", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["emulator"]["executor"] == "ray" and doc["emulator"]["cards"] == 16
    assert doc["config"]["model"]["name"] == "llama3-8b" and doc["config"]["tp"] == 4
    assert "Output token throughput" in res.stdout
    assert _raylets() <= before


LONG_OUTPUTS = {"concurrency": 24, "input": {"mean": 500}, "output": {"mean": 1500}}   # fits tiny-llama's 2048


def test_a_killed_card_is_a_failure_on_ray_equal_to_inline(ray_session):
    """The kill_card control: the same failure, the same retries, the same numbers on both executors."""
    from tests.test_open_rack import killed_at
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=1.5, workload=LONG_OUTPUTS)
    on_ray = with_token_times(*killed_at(spec, 0.5, 1, "ray"))
    inline = with_token_times(*killed_at(spec, 0.5, 1))
    assert on_ray["requests"]["retried"] > 0 and on_ray["failures"][0]["cards"] == (1,)
    assert comparable(on_ray) == comparable(inline)


def kill_9_at(controller, pid: int, t: float = 0.5, needs: Needs = Needs(every_epoch=True)) -> dict:
    """Run, SIGKILL ``pid`` at the epoch boundary ``t`` (the sink asks for ``needs``); the results document,
    with its request accounting checked."""
    def kill(out, _):
        if abs(out.t_end - t) < 1e-9:
            os.kill(pid, signal.SIGKILL)
    kill.needs = needs
    doc = build(controller.run([kill]))
    assert doc["status"] == "completed"
    req = doc["requests"]
    assert accounted(doc)
    assert req["retried"] > 0 and req["completed"] == req["accepted"]       # the healthy instances took them
    return doc


@pytest.mark.parametrize("fast", [True, False], ids=["compiled graph", "plain calls"])
def test_kill_9_of_a_card_actor_mid_run(ray_session, fast):
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=1.5, workload=LONG_OUTPUTS)
    controller = Controller(spec, executor="ray", fast=fast)
    doc = kill_9_at(controller, {p["card"]: p["pid"] for p in controller.executor.processes()}[3])
    (failure,) = doc["failures"]                                             # instance 1 holds cards 2, 3
    assert failure["kind"] == "card" and failure["instances"] == (1,) and failure["cards"] == (3,)
    assert [c["card"] for c in doc["cards"] if c["lost"]] == [3]


def test_a_card_found_dead_by_its_telemetry_is_its_instances_loss_not_its_hosts(ray_session):
    """A card actor killed at 0.5 s is found dead by the next epoch's telemetry call (every epoch here),
    before its host says how far it could run over quiet epochs (two hosts, a closed loop): that look
    must read the group's last pricing, not call its cards, or the card's loss escapes as the host's
    (``Kind.HOST``, both instances failed) — as it did, now and then, when the liveness ping fell there."""
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=1.5, workload=LONG_OUTPUTS)
    controller = Controller(spec, executor="ray", fast=False)
    pid = {p["card"]: p["pid"] for p in controller.executor.processes()}[3]
    doc = kill_9_at(controller, pid, needs=Needs(telemetry_every_s=spec.epoch_s))
    (failure,) = doc["failures"]
    assert failure["kind"] == "card" and failure["instances"] == (1,) and failure["cards"] == (3,)


def test_kill_9_of_a_host_actor_mid_run(ray_session):
    """mini: server 1's host dies; its two instances fail, their requests are re-prefilled on server 0."""
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=1.5, workload=LONG_OUTPUTS)
    controller = Controller(spec, executor="ray")
    doc = kill_9_at(controller, controller.executor.host_pids()[1])
    (failure,) = doc["failures"]
    assert failure["kind"] == "host" and failure["server"] == 1 and failure["instances"] == (2, 3)
    assert [i["failed"] for i in doc["instances"]] == [False, False, True, True]


def _sigint_as_a_terminal_would() -> None:
    """The child takes Ctrl-C as from a terminal, even when this test runs under nohup or as a
    background job (whose children start with SIGINT ignored, and Python then never raises it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("group", [False, True], ids=["kill -INT pid", "Ctrl-C in a terminal (its group)"])
def test_sigint_saves_interrupted_results_and_leaves_no_ray_process(tmp_path, group):
    out = tmp_path / "run.json"
    proc = subprocess.Popen([sys.executable, "-m", "rsd_ray.cli", "run", "--rack", "mini", "--model", "tiny-llama",
                             "--tp", "2", "--duration", "600", "--no-progress", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True, preexec_fn=_sigint_as_a_terminal_would)
    ours: set[int] = set()
    passed = False
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:              # wait for its 8 card actors and a host in an epoch
            cmds = descendants(proc.pid).values()
            if sum("CardActor" in c for c in cmds) >= 8 and any("HostActor.run_epoch" in c for c in cmds):
                break
            time.sleep(0.2)
        time.sleep(3)                                   # requests take ~0.25 s here: some have finished
        ours = set(descendants(proc.pid))
        assert len(ours) > 8
        if group:
            os.killpg(proc.pid, signal.SIGINT)           # what a terminal does: the driver and every Ray process
        else:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-3000:]
        doc = json.loads(out.read_text())
        assert doc["status"] == "interrupted" and doc["emulator"]["executor"] == "ray"
        assert doc["requests"]["completed"] > 0 and accounted(doc)
        assert eventually(lambda: not ours & set(processes()), timeout=30), ours & set(processes())
        passed = True
    finally:
        if not passed:                                  # a failed check leaves nothing of the run behind
            running = {proc.pid} if proc.poll() is None else set()
            for pid in (ours | set(descendants(proc.pid)) | running) & set(processes()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            proc.wait(timeout=30)


PHASES = {   # how to tell, from the child's processes, that it is in the phase
    "Ray starting": lambda cmds: any("raylet" in c for c in cmds),
    "cards starting": lambda cmds: any("CardActor" in c for c in cmds) and not any("run_epoch" in c for c in cmds),
    "mid-run": lambda cmds: any("HostActor.run_epoch" in c for c in cmds),
}


@pytest.mark.parametrize("signum,phase", [(signal.SIGINT, "Ray starting"), (signal.SIGTERM, "Ray starting"),
                                          (signal.SIGHUP, "Ray starting"), (signal.SIGTERM, "cards starting"),
                                          (signal.SIGTERM, "mid-run"), (signal.SIGHUP, "mid-run")],
                         ids=lambda v: getattr(v, "name", v))
def test_a_stop_signal_in_any_phase_saves_what_ran_and_leaves_no_process(tmp_path, signum, phase):
    out, mark = tmp_path / "run.json", f"rsd-ray-test-{os.getpid()}-{signum}-{phase}".replace(" ", "-")
    proc = subprocess.Popen([sys.executable, "-m", "rsd_ray.cli", "run", "--rack", "mini", "--model", "tiny-llama",
                             "--tp", "2", "--duration", "600", "--no-progress", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "RSD_RAY_TEST_MARK": mark}, start_new_session=True,
                            preexec_fn=_sigint_as_a_terminal_would)
    try:
        deadline = time.monotonic() + 180
        while not PHASES[phase](descendants(proc.pid).values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if phase == "mid-run":
            time.sleep(2)                                # some requests have finished
        t0 = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
        assert proc.returncode == 128 + signum, err[-3000:]
        assert took < 10, took                           # ~2.5 s here; the bound leaves room for a loaded machine
        doc = json.loads(out.read_text())
        assert doc["status"] == "interrupted" and signal.Signals(signum).name in doc["reason"]
        assert "Traceback" not in err and signal.Signals(signum).name in err
        if phase == "mid-run":
            assert doc["requests"]["completed"] > 0 and accounted(doc)
        else:
            assert doc["requests"]["offered"] == 0 and "nothing ran" in err
        assert eventually(lambda: not marked(mark), timeout=30), marked(mark)
    finally:
        for pid in marked(mark) | ({proc.pid} if proc.poll() is None else set()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.wait(timeout=30)


def test_a_card_actor_killed_while_the_rack_starts_ends_failed_naming_it(tmp_path):
    """kill -9 of the first card actor as soon as it runs: the run says which card, on which node, and Ray's
    cause, in one line (no remote traceback, no guess), saves a results document saying so, and leaves
    nothing running."""
    out, mark = tmp_path / "run.json", f"rsd-ray-test-{os.getpid()}-card-at-start"
    proc = subprocess.Popen([sys.executable, "-m", "rsd_ray.cli", "run", "--rack", "mini", "--model", "tiny-llama",
                             "--tp", "2", "--duration", "5", "--no-progress", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "RSD_RAY_TEST_MARK": mark})
    try:
        deadline, card = time.monotonic() + 180, None
        while card is None and time.monotonic() < deadline:
            card = next((pid for pid, cmd in descendants(proc.pid).items() if "CardActor" in cmd), None)
            time.sleep(0.02)
        os.kill(card, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err[-3000:]
        doc = json.loads(out.read_text())
        assert doc["status"] == "failed" and doc["requests"]["offered"] == 0
        assert re.search(r"starting card \d+ \(server \d\) .*failed: ActorDiedError: .*\(ip: ", doc["reason"])
        said = [line for line in err.splitlines() if line.startswith("rsd-ray: RackLost")]
        assert len(said) == 1 and "Traceback" not in err and "RAY_AUTH_MODE" not in err, err[-3000:]
        assert eventually(lambda: not marked(mark), timeout=30), marked(mark)
    finally:
        for pid in marked(mark) | ({proc.pid} if proc.poll() is None else set()):
            os.kill(pid, signal.SIGKILL)


def test_start_up_shows_its_phases_with_counts(ray_session):
    from rsd_ray.actors.session import run_on_ray
    seen = []

    def sink(out, in_flight):
        seen.append(("emulating", 0, 0))
    sink.phase = lambda name, done=0, total=0: seen.append((name, done, total))
    outcome = run_on_ray(load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=0.3), [sink])
    order = [name for i, (name, _, _) in enumerate(seen) if i == 0 or seen[i - 1][0] != name]
    canonical = ["placing servers", "starting card actors", "compiling graphs", "starting hosts", "warming",
                 "emulating"]                     # polled every 0.25 s: a quick phase may be missed, never reordered
    assert outcome.status == "completed" and order == [p for p in canonical if p in order]
    assert "starting card actors" in order and order[-2:] == ["warming", "emulating"]
    assert {total for name, _, total in seen if name == "starting card actors"} == {8}   # n / 8 cards


def test_card_server_and_thermal_faults_on_ray_kill_actors_and_lose_no_request(ray_session):
    """Here, not in test_faults: a test session's Ray must not be up while test_open_rack looks for none."""
    from rsd_ray.actors.session import run_on_ray
    from rsd_ray.rack.faults import parse
    from tests.test_faults import MINI, quick_heating
    spec = quick_heating(load_run(None, **{**MINI, "duration_s": 1.5}))
    for faults, kind, why in ((["card:5@0.3s"], "card", "killed"), (["server:0@0.3s"], "server", "lost"),
                              (["ambient:server1=+60C@0.2s"], "card", "abort temperature")):
        outcome = run_on_ray(spec, faults=[parse(f, spec) for f in faults])
        doc = json.loads(json.dumps(build(outcome)))
        assert accounted(doc) and doc["requests"]["unfinished"] == 0, faults
        assert doc["failures"] and {f["kind"] for f in doc["failures"]} == {kind}
        assert all(why in f["reason"] for f in doc["failures"]), doc["failures"]
        assert doc["requests"]["completed"] > 0


def test_recover_restarts_a_killed_card_actor_in_a_new_process_and_equals_inline(ray_session):
    """--recover on Ray: the card's actor is killed and Ray restarts it; the new process loads the card's
    program and state, its instance rejoins; every number equals the inline run's."""
    from rsd_ray.rack.faults import Fault
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=9.0, workload=LONG_OUTPUTS, recover=True)
    docs, pids = {}, []
    for executor in ("ray", "inline"):
        controller = Controller(spec, executor=executor)
        controller.inject([Fault("card", 3, 1.0)])

        def watch(out, _):
            if executor == "ray" and (not pids or (out.recoveries and len(pids) == 1)):
                pids.append({p["card"]: p["pid"] for p in controller.executor.processes()}[3])
        docs[executor] = json.loads(json.dumps(build(controller.run([watch]))))
    on_ray = docs["ray"]
    (r,) = on_ray["recoveries"]
    assert r["cards"] == [3] and r["instance"] == 1 and len(pids) == 2 and pids[0] != pids[1]
    assert accounted(on_ray) and on_ray["requests"]["unfinished"] == 0 and not on_ray["cards"][3]["lost"]
    assert comparable(on_ray) == comparable(docs["inline"])


def test_a_chaos_run_on_ray_loses_no_request_and_equals_inline(ray_session):
    from rsd_ray.rack.faults import chaos
    spec = load_run(None, rack="atom-server", duration_s=15.0, recover=True)
    faults = chaos(28, spec)
    assert [f.kind for f in faults] == ["card", "link", "card"]
    from rsd_ray.report.telemetry import attach
    docs, alerts = {}, set()
    for executor in ("ray", "inline"):
        controller = Controller(spec, executor=executor)
        controller.inject(faults)
        telemetry = attach(controller)

        def watch(out, n):
            telemetry(out, n)
            alerts.update(a.split(" ")[0] + " " + a.split(" ")[1] for a in telemetry.frame()["alerts"])
        watch.needs = telemetry.needs
        docs[executor] = json.loads(json.dumps(build(controller.run([watch]))))
    on_ray = docs["ray"]
    assert on_ray["status"] == "completed" and accounted(on_ray) and on_ray["requests"]["unfinished"] == 0
    assert on_ray["faults"]["failures"] == 2 and on_ray["faults"]["recoveries"] == 2
    assert {"lost card", "failed instance"} <= alerts                       # the dashboards show them
    assert comparable(on_ray) == comparable(docs["inline"])


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_functional_cards_on_ray_pass_partial_sums_card_to_card_and_match_the_reference(ray_session, tmp_path, tp):
    """Card actors read their own shards and hand each other ObjectRefs of their partial sums; the logits
    equal the inline split's bit for bit and the single-device reference within fp32 rounding."""
    import numpy as np

    from rsd_ray.actors.shard_actor import split_on_ray
    from rsd_ray.functional import reference
    from rsd_ray.functional.checkpoint import load, make_model
    from rsd_ray.functional.split import SplitModel, card_shards
    from tests.test_functional import GIB, PROMPTS
    from rsd_ray.functional.timing import StepTimer
    make_model(tmp_path, layers=2, hidden=64, heads=8, kv_heads=2, intermediate=128, vocab=300, seed=1)
    ckpt = load(tmp_path)
    timer = StepTimer(ckpt.config, "gqa", tp)
    on_ray = split_on_ray(tmp_path, tp, GIB, timer=timer)
    try:
        batch = [(i, p, 0) for i, p in enumerate(PROMPTS)]
        logits = on_ray.step(batch)
        inline = SplitModel(ckpt.config, card_shards(tmp_path, tp, GIB)).step(batch)
        assert np.array_equal(logits, inline)
        want = np.stack([reference.logits(ckpt.config, ckpt.weights, p)[-1] for p in PROMPTS])
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
        ids, _ = on_ray.generate([PROMPTS[1]], 32)
        assert ids[0] == reference.greedy(ckpt.config, ckpt.weights, PROMPTS[1], 32)
        import ray
        held = ray.get([c.memory.remote() for c in on_ray.cards])
        assert [h["rank"] for h in held] == list(range(tp))
        assert timer.received_bytes([h["received"] for h in held]) == timer.card_to_card_bytes()   # what Ray moved
        assert all(h["weights"] < sum(w.nbytes for w in ckpt.weights.values()) / tp * 1.2 for h in held)
    finally:
        import ray
        for card in on_ray.cards:
            ray.kill(card)


def test_a_timeline_on_ray_is_the_timeline_inline(tmp_path):
    """--trace works on either executor: the controller actor draws it from the same step records."""
    events = {}
    for executor in ("ray", "inline"):
        trace = tmp_path / f"{executor}.json"
        res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", executor, "--rack", "mini",
                              "--model", "tiny-llama", "--tp", "2", "--duration", "1", "--no-progress", "--trace",
                              str(trace), "--trace-window", "0.2:0.4"], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        events[executor] = json.loads(trace.read_text())["traceEvents"]
    assert len(events["ray"]) > 100 and events["ray"] == events["inline"]
