"""The live plot/fit modules are imported when the stream starts, not by the first flush
after the live model (where they held the next integrations back: session 7)."""

import json
import subprocess
import sys

CHECK = r'''
import json, sys
from nirbeam.stream.live import WARM_UP_MODULES, warm_up_live_products
before = [m for m in WARM_UP_MODULES if m in sys.modules]
none = warm_up_live_products(0.0)
off = [m for m in WARM_UP_MODULES if m in sys.modules]
done = warm_up_live_products(30.0)
print(json.dumps({"before": before, "none": none, "off": off, "done": done,
                  "after": [m for m in WARM_UP_MODULES if m in sys.modules]}))
'''


def test_warm_up_imports_the_first_plot_and_fit_modules_only_when_live_plots_are_on():
    p = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                       timeout=300, check=True)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    # importing the live writer does not load them (nor does plot_every 0)...
    assert r["before"] == [] and r["none"] == [] and r["off"] == []
    # ...the warm-up does, each of them (all installed in the test environment)
    assert r["done"] == r["after"] == ["matplotlib.figure", "matplotlib.backends.backend_agg",
                                       "scipy.optimize", "batman"]


def test_the_stream_starts_the_warm_up(monkeypatch, tmp_path):
    """``run_stream`` starts the warm-up with its ``plot_every`` before the pipeline runs."""
    from nirbeam.stream import streaming

    calls = []

    class Stop(Exception):
        pass

    def fake_pipeline(*a, **k):
        raise Stop

    monkeypatch.setattr(streaming, "warm_up_live_products", lambda pe: calls.append(pe))
    monkeypatch.setattr(streaming.beam, "Pipeline", fake_pipeline)
    try:
        streaming.run_stream(str(tmp_path / "watch"), str(tmp_path / "out"), plot_every=12.5,
                             handle_sigint=False, until_complete=True, allow_standins=True)
    except Stop:
        pass
    import time

    for _ in range(50):
        if calls:
            break
        time.sleep(0.1)
    assert calls == [12.5]
