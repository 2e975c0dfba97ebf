"""Data pipeline benchmark: collection speed, sampler speed, streaming memory, bytes per step.

Measures, on this machine:

1. Meta-World collection speed (env steps/s on one core) with state only and with 64 px
   images, and the bytes per step of the Minari files and of the training store.
2. Sampler throughput (batches/s at the learner's batch size) from an in-memory dataset and
   from a memory-mapped one, against the learner's consumption measured by
   ``benchmarks/speed.py`` (``results/speed.json``): the sampler must be at least 20x faster.
3. Streaming: a synthetic dataset several times larger than a hard memory cap
   (``RLIMIT_DATA`` on a child process) is opened memory-mapped and sampled; we report peak
   resident memory, and check that loading it whole under the same cap fails.
4. A paper-scale projection (300k episodes of ~35 steps) of disk and memory.

    .venv/bin/python benchmarks/data.py
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from qtransformer.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    out: Path = ROOT / "benchmarks" / "results" / "data.json"
    """Where the results go."""
    scratch: Path = Path("/tmp/qtransformer-data-bench")
    """Scratch folder for the large synthetic dataset (deleted at the end)."""
    big_gib: float = 4.0
    """Size of the synthetic on-disk dataset's observations."""
    cap_gib: float = 1.0
    """Hard cap on the sampling process's private memory (RLIMIT_DATA)."""
    big_obs_dim: int = 256
    """Observation size of the synthetic dataset (1 KiB per step in float32)."""
    batch_size: int = 128
    """Learner batch size the sampler must feed."""
    batches: int = 2000
    """Batches drawn per sampler measurement."""
    collect_tasks: str = "reach-v3,push-v3"
    """Tasks for the collection-speed measurement."""
    collect_episodes: int = 20
    """Episodes per task for the collection-speed measurement."""
    paper_episodes: int = 300_000
    """Episodes in the paper-scale projection."""
    paper_steps_per_episode: int = 35
    """Steps per episode in the projection (the paper's 3 Hz control)."""


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def collection(args: Args, scratch: Path) -> dict[str, object]:
    """Steps/s of collection on one core, and bytes per step on disk."""
    from qtransformer import collection as mw
    from qtransformer.data.dataset import OfflineDataset
    from qtransformer.data.minari_io import write_minari
    from qtransformer.envs import metaworld as menv

    tasks = menv.resolve_tasks(args.collect_tasks)
    out: dict[str, object] = {"tasks": tasks}
    for label, image_size in (("state", None), ("image64", 64)):
        items = [
            mw.RecipeItem(task, mw.PolicySpec(kind="noisy", noise=0.3), args.collect_episodes)
            for task in tasks
        ]
        t0 = time.perf_counter()
        episodes = mw.collect(items, seed=0, workers=1, progress=False, image_size=image_size)
        seconds = time.perf_counter() - t0
        steps = sum(int(ep.info.get("env_steps", len(ep))) for ep in episodes)
        decisions = sum(len(ep) for ep in episodes)
        low, high = menv.action_bounds()
        sizes = {}
        for jpeg in (False, True) if image_size else (False,):
            name = f"{label}{'-jpeg' if jpeg else ''}-v0"
            path = write_minari(
                episodes, scratch / "minari", name, action_low=low, action_high=high, jpeg=jpeg
            )
            sizes[f"minari{'_jpeg' if jpeg else ''}_bytes_per_step"] = dir_bytes(path) / decisions
        OfflineDataset.from_episodes(episodes, low, high).save(scratch / f"store-{label}")
        sizes["store_bytes_per_step"] = dir_bytes(scratch / f"store-{label}") / decisions
        out[label] = {
            "episodes": len(episodes),
            "env_steps": steps,
            "seconds": seconds,
            "env_steps_per_s_one_core": steps / seconds,
            **sizes,
        }
    return out


def sampler_rate(data: object, batch_size: int, batches: int, window: int) -> float:
    from qtransformer.data.sampler import TransitionSampler
    from qtransformer.discretize import ActionDiscretizer

    d = data  # OfflineDataset
    sampler = TransitionSampler(
        d,
        ActionDiscretizer(d.action_low, d.action_high, 256),  # type: ignore[attr-defined]
        0.98,
        1,
        window,
    )
    g = torch.Generator().manual_seed(0)
    rates = []
    for _ in range(2):  # the better of two passes: the first may still warm caches
        t0 = time.perf_counter()
        for _ in range(batches):
            sampler.batch(sampler.sample_indices(batch_size, g))
        rates.append(batches / (time.perf_counter() - t0))
    return max(rates)


def synthetic_store(path: Path, steps: int, obs_dim: int, episode_len: int = 35) -> None:
    """Write a store of random episodes chunk by chunk (never whole in memory)."""
    from numpy.lib.format import open_memmap

    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    obs = open_memmap(path / "observations.npy", "w+", np.float32, (steps, obs_dim))
    chunk = 1 << 16
    for a in range(0, steps, chunk):
        b = min(steps, a + chunk)
        obs[a:b] = rng.standard_normal((b - a, obs_dim), dtype=np.float32)
    obs.flush()
    del obs
    ends = np.arange(steps) % episode_len == episode_len - 1
    success = rng.uniform(size=steps) < 0.5
    np.save(path / "actions.npy", rng.uniform(-1, 1, (steps, 4)).astype(np.float32))
    np.save(path / "rewards.npy", (ends & success).astype(np.float32))
    np.save(path / "terminals.npy", ends & success)
    np.save(path / "timeouts.npy", ends & ~success)
    np.save(path / "task_ids.npy", np.zeros(steps, np.int32))
    meta = {
        "format": "qtransformer-dataset-v1",
        "action_low": [-1.0] * 4,
        "action_high": [1.0] * 4,
        "tasks": ["synthetic"],
        "instructions": ["synthetic"],
        "metadata": {},
    }
    (path / "dataset.json").write_text(json.dumps(meta))


STREAM_CHILD = """
import json, resource, sys, time
import numpy as np, torch
from qtransformer.data.dataset import OfflineDataset
from qtransformer.data.sampler import TransitionSampler
from qtransformer.discretize import ActionDiscretizer
path, batches, batch_size, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def anon_mib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) / 1024


before = anon_mib()
data = OfflineDataset.load(path, mmap=True)
if mode == "load_whole":
    try:
        np.array(data.observations)
        print(json.dumps({"loaded_whole": True}))
    except MemoryError:
        print(json.dumps({"loaded_whole": False}))
    sys.exit(0)
sampler = TransitionSampler(data, ActionDiscretizer(data.action_low, data.action_high, 256),
                            0.98, 1, 4)
built = anon_mib()
g = torch.Generator().manual_seed(0)
t0 = time.perf_counter()
for _ in range(batches):
    sampler.batch(sampler.sample_indices(batch_size, g))
rate = batches / (time.perf_counter() - t0)
status = dict(l.split(":", 1) for l in open("/proc/self/status") if l.startswith(("Vm", "Rss")))
print(json.dumps({
    "batches_per_s": rate,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_anon_mib": int(status["RssAnon"].split()[0]) / 1024,
    "rss_file_mib": int(status["RssFile"].split()[0]) / 1024,
    "steps": len(sampler),
    "index_bytes_per_step": (built - before) * 2**20 / len(sampler),
}))
"""


def streaming(args: Args, scratch: Path) -> dict[str, object]:
    steps = int(args.big_gib * (1 << 30)) // (4 * args.big_obs_dim)
    store = scratch / "big"
    t0 = time.perf_counter()
    synthetic_store(store, steps, args.big_obs_dim)
    write_s = time.perf_counter() - t0
    cap = int(args.cap_gib * (1 << 30))

    def child(mode: str) -> dict[str, object]:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                STREAM_CHILD,
                str(store),
                str(args.batches),
                str(args.batch_size),
                mode,
            ],
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (cap, cap)),
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])

    # Evict the freshly written file from the page cache, so sampling reads from disk.
    os.sync()
    for f in store.glob("*.npy"):
        fd = os.open(f, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    return {
        "dataset_gib_on_disk": dir_bytes(store) / (1 << 30),
        "observations_gib": args.big_gib,
        "steps": steps,
        "obs_dim": args.big_obs_dim,
        "memory_cap_gib": args.cap_gib,
        "write_seconds": write_s,
        "sampling_under_cap": child("sample"),
        "loading_whole_under_cap": child("load_whole"),
    }


def main(args: Args) -> None:
    from qtransformer.data.dataset import OfflineDataset

    torch.set_num_threads(1)
    scratch = args.scratch
    scratch.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {
        "command": "python benchmarks/data.py",
        "machine": machine_info(),
        "args": {k: str(v) for k, v in asdict(args).items()},
    }
    try:
        coll = collection(args, scratch)
        result["collection"] = coll

        speed_file = ROOT / "benchmarks" / "results" / "speed.json"
        speed = json.loads(speed_file.read_text())
        learner = {r["action_dim"]: r["train"]["steps_per_s"] for r in speed["per_action_dim"]}
        state = OfflineDataset.load(scratch / "store-state", mmap=False)
        # Tile the collected episodes to a realistic size (about 1M steps) in memory.
        reps = max(1, 1_000_000 // len(state))
        arrays = {
            k: np.concatenate([getattr(state, k)] * reps)
            for k in ("observations", "actions", "rewards", "terminals", "timeouts")
        }
        big_state = OfflineDataset.from_arrays(
            **arrays, action_low=state.action_low, action_high=state.action_high
        )
        mem = {
            f"window{w}": sampler_rate(big_state, args.batch_size, args.batches, w) for w in (1, 4)
        }
        fastest_learner = max(learner.values())
        result["sampler"] = {
            "steps_in_dataset": len(big_state),
            "batch_size": args.batch_size,
            "in_memory_batches_per_s": mem,
            "learner_steps_per_s_by_action_dim": learner,
            "learner_source": "benchmarks/results/speed.json (batch 128, this machine)",
            "ratio_to_fastest_learner": {k: v / fastest_learner for k, v in mem.items()},
        }
        stream = streaming(args, scratch)
        stream["ratio_to_fastest_learner"] = (
            stream["sampling_under_cap"]["batches_per_s"] / fastest_learner  # type: ignore[index]
        )
        result["streaming"] = stream

        n = args.paper_episodes * args.paper_steps_per_episode
        state_b = coll["state"]["store_bytes_per_step"]  # type: ignore[index]
        image_b = coll["image64"]["store_bytes_per_step"]  # type: ignore[index]
        jpeg_b = coll["image64"]["minari_jpeg_bytes_per_step"]  # type: ignore[index]
        result["paper_scale_projection"] = {
            "episodes": args.paper_episodes,
            "steps": n,
            "disk_gib": {
                "state_store": n * state_b / (1 << 30),
                "image64_store_raw": n * image_b / (1 << 30),
                "image64_minari_jpeg": n * jpeg_b / (1 << 30),
            },
            "sampler_memory_gib": n
            * stream["sampling_under_cap"]["index_bytes_per_step"]  # type: ignore[index]
            / (1 << 30),
            "note": "sampler memory is the per-step targets, bins and indices held in RAM; "
            "observations and images stay memory-mapped on disk",
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(tyro.cli(Args))
