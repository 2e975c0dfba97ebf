"""Camera frames as video: bytes per image step (raw, JPEG, AV1, H.264), the codec's error,
decoding speed, the sampler's batches/s against the pixel learner's consumption, and the peak
memory of training from a video dataset whose raw frames would not fit under a cap.

.venv/bin/python benchmarks/lerobot_io.py [--episodes 10] [--big-steps 200000]

Frames are Meta-World push-v3 camera frames (64 px, corner camera), collected here; the
memory check tiles them into a dataset of ``--big-steps`` steps. Writes
benchmarks/results/lerobot_io.json and lerobot_io.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import tyro

import qtransformer as qt
from qtransformer import collection as mw
from qtransformer.data.lerobot import write_lerobot
from qtransformer.data.loader import BatchStream
from qtransformer.data.minari_io import write_minari
from qtransformer.data.sampler import TransitionSampler
from qtransformer.data.video import VideoSettings
from qtransformer.discretize import ActionDiscretizer
from qtransformer.envs import metaworld as menv
from qtransformer.learner import Learner
from qtransformer.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    episodes: int = 10
    """Meta-World push-v3 episodes collected for the frames (demos and failures)."""
    work: Path = ROOT / "runs" / "lerobot_io"
    """Datasets written here (not committed)."""
    batch_size: int = 128
    """Batch of the sampler and the learner (the pixel learner's default)."""
    seconds: float = 8.0
    """Time each throughput measurement runs."""
    train_steps: int = 60
    """Steps of each whole training run (sampler and learner sharing the cores)."""
    big_steps: int = 200_000
    """Steps of the tiled dataset of the memory check (0: skip it)."""
    memory_cap_gib: float = 1.0
    """The cap the memory check holds training to (peak proportional set size of the trainer
    and its workers together), below the raw frames' size."""
    out: Path = ROOT / "benchmarks" / "results"


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def frame_error(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mse = float((d.astype(np.float64) ** 2).mean())
    return {
        "mean_abs": float(d.mean()),
        "p99_abs": float(np.percentile(d, 99)),
        "psnr_db": float(10 * np.log10(255**2 / mse)) if mse else float("inf"),
    }


def with_images(data: qt.OfflineDataset, images: np.ndarray | None) -> qt.OfflineDataset:
    """The same steps with other frames (or none)."""
    return qt.OfflineDataset.from_arrays(
        data.observations,
        data.actions,
        data.rewards,
        data.terminals,
        data.timeouts,
        data.action_low,
        data.action_high,
        images=images,
        metadata=data.metadata,
    )


def rate(fn, seconds: float) -> tuple[float, int]:
    """Calls per second of ``fn`` after a warm-up call, and the calls made."""
    fn()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0), n


def storage(data: qt.OfflineDataset, episodes: list, work: Path) -> list[dict]:
    """Whole-dataset and image bytes per step of every storage, with the frames' error."""
    T = len(data)
    state_only = with_images(data, None)
    low, high = menv.action_bounds()
    rows = []

    def minari(name: str, jpeg: bool, images: bool) -> Path:
        eps = episodes if images else [replace(e, images=None) for e in episodes]
        return write_minari(
            eps, work, name, action_low=low, action_high=high, jpeg=jpeg, overwrite=True
        )

    base_minari = folder_bytes(minari("bench-state-v0", False, False))
    base_lerobot = folder_bytes(write_lerobot(state_only, work / "lerobot-state", overwrite=True))
    variants = [
        ("raw (Minari HDF5)", "minari", False, None),
        ("JPEG (Minari HDF5)", "minari", True, None),
        ("AV1 crf 30 (LeRobot default)", "lerobot", None, VideoSettings()),
        ("AV1 crf 20", "lerobot", None, VideoSettings(crf=20)),
        ("H.264 crf 23", "lerobot", None, VideoSettings(codec="h264", crf=23)),
    ]
    for label, kind, jpeg, video in variants:
        t0 = time.perf_counter()
        if kind == "minari":
            path = minari(f"bench-{'jpeg' if jpeg else 'raw'}-v0", bool(jpeg), True)
            base = base_minari
        else:
            path = write_lerobot(
                data,
                work / f"lerobot-{video.codec}-{video.crf}",
                fps=80,
                video=video,
                overwrite=True,
            )
            base = base_lerobot
        write_s = time.perf_counter() - t0
        back = qt.OfflineDataset.open(path)
        t0 = time.perf_counter()
        frames = np.asarray(back.images)
        read_s = time.perf_counter() - t0
        total = folder_bytes(path)
        rows.append(
            {
                "storage": label,
                "bytes_per_step": total / T,
                "image_bytes_per_step": (total - base) / T,
                "ratio_to_raw_frame": (total - base) / T / (data.images[0].nbytes),
                "write_frames_per_s": T / write_s,
                "read_all_frames_per_s": T / read_s,
                "error": frame_error(frames, data.images),
            }
        )
        print(rows[-1])
    return rows


def decoding(path: Path, batch: int, seconds: float) -> dict:
    data = qt.OfflineDataset.open(path)
    frames = data.images
    T = len(data)
    seq, _ = rate(lambda: np.asarray(frames), seconds)
    rng = np.random.default_rng(0)
    rand, _ = rate(lambda: frames[rng.integers(0, T, batch)], seconds)
    return {
        "sequential_frames_per_s": seq * T,
        "random_frames_per_s": rand * batch,
        "random_batch": batch,
    }


def sampler_and_learner(path: Path, args: Args) -> dict:
    """Batches/s the sampler makes (frames from video, 0-2 workers; frames in memory) and
    steps/s the pixel learner takes on batches already made."""
    data = qt.OfflineDataset.open(path)
    in_memory = with_images(data, np.asarray(data.images))
    cfg = qt.TrainConfig(observation="image", batch_size=args.batch_size)
    disc = ActionDiscretizer(data.action_low, data.action_high, cfg.n_bins)
    out: dict = {"batch_size": args.batch_size, "window": cfg.window}
    for label, source, workers in [
        ("video, in the loop", data, 0),
        ("video, 1 worker", data, 1),
        ("video, 2 workers", data, 2),
        ("frames in memory, in the loop", in_memory, 0),
    ]:
        sampler = TransitionSampler(source, disc, cfg.gamma, cfg.n_step, cfg.window, images=True)
        stream = BatchStream(sampler, args.batch_size, torch.Generator().manual_seed(0), workers)
        per_s, n = rate(lambda s=stream: next(s), args.seconds)
        stream.close()
        out[f"sampler_batches_per_s/{label}"] = per_s
        print(label, per_s)
    learner = Learner(
        cfg,
        data.obs_dim,
        data.action_dim,
        1.0,
        1,
        "cpu",
        image_shape=tuple(int(s) for s in data.images.shape[1:]),
    )
    sampler = TransitionSampler(in_memory, disc, cfg.gamma, cfg.n_step, cfg.window, images=True)
    batch = sampler.batch(np.arange(args.batch_size))
    per_s, _ = rate(lambda: learner.update(batch, metrics=False), args.seconds)
    out["learner_steps_per_s"] = per_s
    print("learner", per_s)
    # Sampler and learner together, sharing the cores: whole training runs.
    for label, source, workers in [
        ("video, in the loop", data, 0),
        ("video, 2 workers", data, 2),
        ("frames in memory, in the loop", in_memory, 0),
    ]:
        run = replace(cfg, steps=args.train_steps, data_workers=workers, log_every=10**6)
        t0 = time.perf_counter()
        qt.train(source, run)
        out[f"training_steps_per_s/{label}"] = args.train_steps / (time.perf_counter() - t0)
        print("train", label, out[f"training_steps_per_s/{label}"])
    return out


MEMORY_CHILD = """
import resource, sys, time, torch, qtransformer as qt
torch.set_num_threads(1)
data = qt.OfflineDataset.open(sys.argv[1])
cfg = qt.TrainConfig(observation="image", batch_size=128, steps=int(sys.argv[2]), data_workers=2,
                     d_model=64, image_channels=(16, 32))
t0 = time.perf_counter()
qt.train(data, cfg)
print("SECONDS", time.perf_counter() - t0)
"""


def memory_tree(pid: int) -> int:
    """Proportional set size of a process and its children, now: pages shared by forked
    workers count once, split between them, so the sum is the memory the run really holds."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(k) for k in kids]
    for k in list(out):
        out += _children(k)
    return out


def memory_check(data: qt.OfflineDataset, args: Args) -> dict:
    """Tile the frames into a dataset whose raw frames exceed the cap; train from its video
    with two workers and sample the summed RSS of the trainer and its workers."""
    reps = -(-args.big_steps // len(data))
    idx = np.tile(np.arange(len(data)), reps)[: args.big_steps]
    term = np.tile(data.terminals, reps)[: args.big_steps]
    tout = np.tile(data.timeouts, reps)[: args.big_steps]
    tout[-1] = not term[-1]

    class Tiled:
        shape = (len(idx), *data.images.shape[1:])
        dtype = np.dtype(np.uint8)
        ndim = 4

        def __len__(self) -> int:
            return len(idx)

        def __getitem__(self, key):
            return np.asarray(data.images[idx[key]])

    big = qt.OfflineDataset.from_arrays(
        np.asarray(data.observations)[idx],
        np.asarray(data.actions)[idx],
        np.asarray(data.rewards)[idx],
        term,
        tout,
        data.action_low,
        data.action_high,
    )
    big.images = Tiled()  # type: ignore[assignment]
    path = args.work / "lerobot-big"
    t0 = time.perf_counter()
    if not (path / "meta/info.json").exists():
        write_lerobot(big, path, fps=80, overwrite=True)
    write_s = time.perf_counter() - t0
    raw = len(idx) * int(np.prod(data.images.shape[1:]))
    steps = 200
    proc = subprocess.Popen(
        [sys.executable, "-c", MEMORY_CHILD, str(path), str(steps)],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, memory_tree(proc.pid))
        time.sleep(0.05)
    out = proc.stdout.read() if proc.stdout else ""
    seconds = float(out.split("SECONDS")[-1]) if "SECONDS" in out else None
    cap = int(args.memory_cap_gib * 2**30)
    return {
        "steps": len(idx),
        "episodes": int(big.num_episodes),
        "raw_frame_bytes": raw,
        "video_bytes": folder_bytes(path / "videos"),
        "dataset_bytes": folder_bytes(path),
        "write_seconds": write_s,
        "train_steps": steps,
        "train_seconds": seconds,
        "peak_pss_bytes": peak,
        "cap_bytes": cap,
        "under_cap": peak < cap,
        "returncode": proc.returncode,
    }


def main(args: Args) -> None:
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    recipe = mw.custom_recipe(
        "push-v3", demos=args.episodes // 2, failures=args.episodes - args.episodes // 2
    )
    episodes = mw.collect(recipe, seed=0, workers=2, progress=False, image_size=64)
    low, high = menv.action_bounds()
    data = qt.OfflineDataset.from_episodes(
        episodes, low, high, {"source": "metaworld", "camera": "corner", "action_repeat": 1}
    )
    print(f"collected {len(data)} steps in {time.perf_counter() - t0:.0f} s")
    result = {
        "command": " ".join(["benchmarks/lerobot_io.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "frames": f"Meta-World push-v3, corner camera, 64 px, {len(data)} steps",
        "storage": storage(data, episodes, args.work),
    }
    default = args.work / "lerobot-libsvtav1-30"
    result["decoding"] = decoding(default, args.batch_size, args.seconds)
    result["pipeline"] = sampler_and_learner(default, args)
    if args.big_steps:
        result["memory"] = memory_check(data, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lerobot_io.json").write_text(json.dumps(result, indent=2))
    (args.out / "lerobot_io.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Camera frames as video (LeRobot v3 storage)",
        "",
        f"`{r['command']}` on {m['cpu_model']} ({m['cpu_count']} cores), torch {m['torch']}, "
        f"one run (ratios hold within it). Frames: {r['frames']}. Minari decodes JPEG when it "
        "opens a dataset; video is decoded when frames are read.",
        "",
        "| storage | bytes per step (dataset) | image bytes per step | vs raw frame "
        "| mean abs error | PSNR dB | writes frames/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in r["storage"]:
        e = s["error"]
        lines.append(
            f"| {s['storage']} | {s['bytes_per_step']:.0f} | {s['image_bytes_per_step']:.0f} | "
            f"{s['ratio_to_raw_frame']:.3f} | {e['mean_abs']:.2f} | {e['psnr_db']:.1f} | "
            f"{s['write_frames_per_s']:.0f} |"
        )
    d = r["decoding"]
    p = r["pipeline"]
    lines += [
        "",
        "Decoding (AV1 crf 30, one process): "
        f"{d['sequential_frames_per_s']:.0f} frames/s in order, "
        f"{d['random_frames_per_s']:.0f} frames/s as random batches of {d['random_batch']}.",
        "",
        f"| batches of {p['batch_size']} (window {p['window']}: "
        f"{2 * p['batch_size'] * p['window']} frames each) | per second |",
        "|---|---|",
    ]
    for k, v in p.items():
        if k.startswith("sampler_batches_per_s/"):
            lines.append(f"| sampler, {k.split('/', 1)[1]} | {v:.2f} |")
    lines.append(f"| pixel learner's updates (its consumption) | {p['learner_steps_per_s']:.2f} |")
    for k, v in p.items():
        if k.startswith("training_steps_per_s/"):
            lines.append(
                f"| whole training (sampler and learner together), {k.split('/', 1)[1]} | {v:.2f} |"
            )
    if "memory" in r:
        mm = r["memory"]
        gib = 2**30
        lines += [
            "",
            f"Memory: {mm['steps']} steps ({mm['episodes']} episodes), raw frames "
            f"{mm['raw_frame_bytes'] / gib:.2f} GiB, as video {mm['video_bytes'] / 2**20:.0f} MiB. "
            f"Training {mm['train_steps']} steps from the video with 2 workers: peak memory "
            f"(proportional set size) of the trainer and its workers together "
            f"{mm['peak_pss_bytes'] / gib:.2f} GiB, cap "
            f"{mm['cap_bytes'] / gib:.2f} GiB: {'under' if mm['under_cap'] else 'OVER'} the cap "
            f"({mm['train_seconds'] or float('nan'):.0f} s).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(tyro.cli(Args))
