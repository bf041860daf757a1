"""Load probe of the running app, not part of the test suite: `python scripts/load_probe.py [SECTION ...]`.

Starts `python app.py` on the repository's checkpoints on a free loopback port, then measures over HTTP:
  1. 24 clients at once on /generate (4 binarized-MNIST samples each);
  2. two maximum-size context-aware completions (CIFAR-10 PixelCNN, 16 particles x 8 completions, bottom half
     masked) with a 1-sample generate of each model beside them;
  3. 12 clients at once on /inspect of one 25-megapixel 16-bit PNG, with a 1-sample generate beside them
     (timed against the same generate alone);
  4. 3 clients looping on a Hub model whose download stalls (a loopback fake Hub), with a 1-sample generate of a
     shipped model beside them (timed against the same generate alone). The server runs on core 0 and the clients
     on core 1, as remote visitors would: clients in the server's process would share its interpreter lock.
Prints latencies, and the server's resident memory (VmRSS) and peak (VmHWM) from /proc. Sections: all by default.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from pixelrnn.bench import api_call as call
from pixelrnn.bench import serving

MNIST, CIFAR = "binarized-mnist-diagonal-bilstm", "cifar10-pixelcnn-conditional"


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))


def timed(fn, *args) -> tuple[float, str]:
    """(seconds, "ok" or the error) of one call."""
    start = time.monotonic()
    try:
        fn(*args)
        outcome = "ok"
    except Exception as err:  # noqa: BLE001 - reported
        outcome = f"error: {str(err)[:110]}"
    return time.monotonic() - start, outcome


def in_threads(calls: list[tuple]) -> list[tuple[float, str]]:
    """Run (fn, *args) calls at once, each in its thread -> [(seconds, outcome)] in the same order."""
    results: list = [None] * len(calls)

    def run(k: int) -> None:
        results[k] = timed(*calls[k])

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(calls))]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    return results


def generator(url: str):
    """A function (model, label, n, seed) -> None that asks the server at `url` for n samples."""
    def generate(model: str, label: str | None, n: int, seed: int) -> None:
        Client(url, download_files=False, verbose=False).predict(model, label, n, 1.0, seed, 0, api_name="/generate")
    return generate


def main() -> int:
    sections = set(sys.argv[1:]) or {"1", "2", "3", "4"}
    if sections & {"1", "2", "3"}:
        with serving() as (url, pid):
            for number, section in (("1", section_1), ("2", section_2), ("3", section_3)):
                if number in sections:
                    section(url, pid, generator(url))
    if "4" in sections:
        section_4()
    return 0


def section_1(url: str, pid: int, generate) -> None:
    results = in_threads([(generate, MNIST, None, 4, k) for k in range(24)])
    seconds = [r[0] for r in results]
    print(f"1. 24 clients on /generate ({MNIST}, 4 samples): {sum(r[1] == 'ok' for r in results)} ok; latency "
          f"min {min(seconds):.1f} s, median {statistics.median(seconds):.1f} s, max {max(seconds):.1f} s; "
          f"memory {memory_mb(pid)[0]:.0f} MB, peak {memory_mb(pid)[1]:.0f} MB")


def section_2(url: str, pid: int, generate) -> None:
    client = Client(url, download_files=False, verbose=False)
    folder = Path(tempfile.mkdtemp())
    Image.open(REPO / "assets" / "cifar_cat.png").convert("RGB").save(folder / "cat.png")
    mask = np.zeros((256, 256, 4), dtype=np.uint8)
    mask[128:] = (255, 0, 0, 255)
    Image.fromarray(mask).save(folder / "mask.png")
    editor = {"background": handle_file(str(folder / "cat.png")), "layers": [handle_file(str(folder / "mask.png"))],
              "composite": None}

    def complete() -> None:
        client.predict(CIFAR, editor, "cat", "context-aware (SMC)", 16, 8, 1.0, 0, 0, api_name="/complete")

    results = in_threads([(complete,), (complete,), (generate, MNIST, None, 1, 0), (generate, CIFAR, "cat", 1, 0)])
    names = ["max SMC completion #1", "max SMC completion #2", f"1-sample generate, {MNIST}",
             f"1-sample generate, {CIFAR}"]
    print("2. two maximum SMC completions (CIFAR, 16 particles x 8) with 1-sample generates beside them:")
    for name, (seconds, outcome) in zip(names, results, strict=True):
        print(f"   {name}: {seconds:.1f} s, {outcome}")
    time.sleep(1)
    rss, peak = memory_mb(pid)
    print(f"memory after the jobs {rss:.0f} MB, peak {peak:.0f} MB")


def section_3(url: str, pid: int, generate) -> None:
    folder = Path(tempfile.mkdtemp())
    ramp = (np.arange(5000, dtype=np.uint32)[None] * 13 + np.arange(5000, dtype=np.uint32)[:, None] * 7) % 65536
    Image.fromarray(ramp.astype(np.uint16)).save(folder / "huge16.png")  # 25 MP, 16 bits, a small file
    size_kb = (folder / "huge16.png").stat().st_size / 1024
    alone, _ = timed(generate, MNIST, None, 1, 0)
    before = memory_mb(pid)[0]

    def inspect() -> None:
        Client(url, download_files=False, verbose=False).predict(MNIST, handle_file(str(folder / "huge16.png")), None,
                                                                 api_name="/inspect")

    results = in_threads([(inspect,)] * 12 + [(generate, MNIST, None, 1, 0)])
    rss, peak = memory_mb(pid)
    print(f"3. 12 clients on /inspect of a 25 MP 16-bit PNG ({size_kb:.0f} kB): {sum(r[1] == 'ok' for r in results[:12])}"
          f" ok, slowest {max(r[0] for r in results[:12]):.1f} s; a 1-sample generate beside them {results[12][0]:.1f} s"
          f" ({results[12][1]}), alone {alone:.1f} s; memory before {before:.0f} MB, after {rss:.0f} MB, peak {peak:.0f}"
          f" MB")


def section_4() -> None:
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    import fakehub

    files = {p.name: p.read_bytes() for p in (REPO / "checkpoints" / MNIST).iterdir() if p.is_file()}
    os.sched_setaffinity(0, {1})
    with fakehub.FakeHub({"user/stalled": files}) as hub:
        hub.stall()
        env = {"PIXELRNN_HUB_MODELS": "user/stalled", "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
               "HF_HOME": tempfile.mkdtemp(), "HF_TOKEN": "hf_fake"}
        with serving(env, cpus={0}) as (url, _pid):
            def local_generates() -> float:
                return statistics.median(call(url, "generate", [MNIST, None, 1, 1.0, k, 0])[2] for k in range(5))

            alone, stop, answers = local_generates(), threading.Event(), []

            def loop() -> None:
                while not stop.is_set():
                    answers.append(call(url, "generate", ["user/stalled", None, 1, 1.0, 0, 0], 60))

            loopers = [threading.Thread(target=loop, daemon=True) for _ in range(3)]
            for thread in loopers:
                thread.start()
            time.sleep(3)
            beside = local_generates()
            stop.set()
            for thread in loopers:
                thread.join(60)
            hub.release()
    print(f"4. 3 clients looping on a stalled Hub model: {len(answers)} answers, slowest {max(a[2] for a in answers):.2f}"
          f" s ({sorted({str(a[1])[:70] for a in answers})}); a 1-sample generate beside them {beside:.2f} s, alone "
          f"{alone:.2f} s (medians of 5)")


if __name__ == "__main__":
    sys.exit(main())
