"""LeRobot datasets: our exporter round-trips, folders written by LeRobot's own code read
correctly, bad metadata is named, and video frames stream through loader workers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from factories import TINY_MODEL

import qtransformer as qt
from qtransformer.data import lerobot as lr
from qtransformer.data.episodes import DatasetError
from qtransformer.data.lerobot import LeRobotColumns, read_lerobot, write_lerobot
from qtransformer.data.loader import BatchStream
from qtransformer.data.sampler import TransitionSampler
from qtransformer.data.video import VideoFrames, VideoSettings, encode_video
from qtransformer.discretize import ActionDiscretizer

FIXTURES = Path(__file__).parent / "fixtures" / "lerobot"
CODEC_MEAN_ERROR = 4.0
"""Largest mean absolute error (0-255 levels) we accept from AV1 at crf 30 on 64 px frames
(measured: 1.4 on our frames, 2.5 on the LeRobot fixture's)."""


def frames_of(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Frames that differ clearly from one another: a gradient, a moving square, a tint."""
    out = np.zeros((n, size, size, 3), np.uint8)
    ramp = np.linspace(0, 255, size).astype(np.uint8)
    for t in range(n):
        out[t, :, :, 0] = ramp[None, :]
        out[t, :, :, 1] = ramp[:, None] // 2
        y, x = (t * 5 + seed) % (size - 12), (t * 3) % (size - 12)
        out[t, y : y + 12, x : x + 12] = 255
        out[t, :, :, 2] = (t * 37 + seed * 11) % 256
    return out


def assert_frames_match(decoded: np.ndarray, source: np.ndarray) -> None:
    """Within the codec's error, and each decoded frame nearest to its own source frame."""
    err = np.abs(decoded.astype(np.int16) - source.astype(np.int16))
    assert err.mean() < CODEC_MEAN_ERROR
    dist = np.abs(decoded[:, None].astype(np.int16) - source[None].astype(np.int16)).mean(
        axis=(2, 3, 4)
    )  # (n, n)
    assert np.array_equal(dist.argmin(axis=1), np.arange(len(source)))


def make_dataset(images: bool = True) -> qt.OfflineDataset:
    """Three tasks, a success, a failure cut by the time limit, a failure that ended."""
    rng = np.random.default_rng(0)
    lengths = [12, 9, 15, 7]
    T = sum(lengths)
    ends = np.cumsum(lengths) - 1
    terminals = np.zeros(T, bool)
    timeouts = np.zeros(T, bool)
    rewards = np.zeros(T, np.float32)
    terminals[ends[[0, 2]]] = True  # success, failure that ended
    rewards[ends[0]] = 1.0
    timeouts[ends[[1, 3]]] = True
    return qt.OfflineDataset.from_arrays(
        observations=rng.normal(size=(T, 6)).astype(np.float32),
        actions=rng.uniform(-1, 1, (T, 3)).astype(np.float32),
        rewards=rewards,
        terminals=terminals,
        timeouts=timeouts,
        action_low=-np.ones(3),
        action_high=np.ones(3),
        task_ids=np.repeat([2, 0, 1, 2], lengths),
        tasks=["push-v3", "reach-v3", "drawer-open-v3"],
        instructions=["push the puck", "reach the goal", "open the drawer"],
        images=frames_of(T) if images else None,
        metadata={"source": "metaworld", "max_steps": 200, "action_repeat": 1, "camera": "corner"},
    )


ARRAYS = ("observations", "actions", "rewards", "terminals", "timeouts", "task_ids")


def test_export_reads_back_equal(tmp_path) -> None:
    data = make_dataset()
    path = write_lerobot(data, tmp_path / "ds", fps=10)
    back = qt.OfflineDataset.open(path)
    for name in ARRAYS:
        assert np.array_equal(np.asarray(getattr(back, name)), np.asarray(getattr(data, name))), (
            name
        )
    assert back.tasks == data.tasks and back.instructions == data.instructions
    np.testing.assert_array_equal(back.action_low, data.action_low)
    assert back.env_settings() == data.env_settings()
    assert isinstance(back.images, VideoFrames) and back.images.shape == data.images.shape
    assert_frames_match(np.asarray(back.images), data.images)
    # Random rows decode to the same frames as reading the whole video in order.
    rows = np.random.default_rng(1).integers(0, len(data), 40)
    assert np.array_equal(back.images[rows], np.asarray(back.images)[rows])
    # Opened twice, the same fingerprint (checkpoints compare it), without decoding.
    again = qt.OfflineDataset.open(path)
    assert again.fingerprint() == back.fingerprint()
    assert again.images.frames_decoded == 0


def test_export_layout_is_lerobot_v3(tmp_path) -> None:
    path = write_lerobot(make_dataset(), tmp_path / "ds", fps=10)
    info = json.loads((path / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 4
    assert info["features"]["observation.images.corner"]["info"]["video.codec"] == "av1"
    fixture = pq.read_schema(FIXTURES / "v3_tiny/data/chunk-000/file-000.parquet")
    ours = pq.read_schema(path / "data/chunk-000/file-000.parquet")
    assert {
        n: str(t) for n, t in zip(ours.names, ours.types, strict=True) if n != "observation.state"
    } == {
        n: str(t)
        for n, t in zip(fixture.names, fixture.types, strict=True)
        if n != "observation.state"
    } | {"action": "fixed_size_list<element: float>[3]"}
    eps = pq.read_table(path / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert eps["length"] == [12, 9, 15, 7]
    assert eps["videos/observation.images.corner/from_timestamp"] == pytest.approx(
        [0, 1.2, 2.1, 3.6]
    )
    assert eps["tasks"][0] == ["open the drawer"]
    tasks = pq.read_table(path / "meta/tasks.parquet").to_pydict()
    assert tasks["__index_level_0__"] == ["push the puck", "reach the goal", "open the drawer"]


def test_export_splits_videos_and_data_files_at_their_size_limits(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(lr, "VIDEO_FILE_MB", 1e-3)  # a new video file after every ~1 kB
    monkeypatch.setattr(lr, "DATA_FILE_MB", 1e-3)
    data = make_dataset()
    path = write_lerobot(data, tmp_path / "ds", fps=10)
    assert len(list((path / "videos").rglob("*.mp4"))) > 1
    assert len(list((path / "data").rglob("*.parquet"))) > 1
    back = qt.OfflineDataset.open(path)
    assert len(back.images.files) > 1
    for name in ARRAYS:
        assert np.array_equal(np.asarray(getattr(back, name)), np.asarray(getattr(data, name)))
    assert_frames_match(np.asarray(back.images), data.images)


def test_export_without_images_and_state_only_reading(tmp_path) -> None:
    path = write_lerobot(make_dataset(images=False), tmp_path / "ds", fps=10)
    back = qt.OfflineDataset.open(path)
    assert back.images is None and not (path / "videos").exists()
    with_images = write_lerobot(make_dataset(), tmp_path / "cam", fps=10)
    assert read_lerobot(with_images, LeRobotColumns(camera="none")).images is None


def test_export_refuses_to_replace_without_overwrite(tmp_path) -> None:
    path = write_lerobot(make_dataset(images=False), tmp_path / "ds")
    before = (path / "meta/info.json").read_text()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_lerobot(make_dataset(images=False), path)
    assert (path / "meta/info.json").read_text() == before


@pytest.mark.parametrize("version", ["v3_tiny", "v21_tiny"])
def test_reads_a_dataset_written_by_lerobot(version) -> None:
    """Folders written by LeRobot's own code (lerobot 0.4.4 for v3.0, 0.3.3 for v2.1; see
    fixtures/lerobot/README.md), with the arrays they were given."""
    expected = np.load(FIXTURES / f"{version}_expected.npz")
    facts = json.loads((FIXTURES / f"{version}_expected.json").read_text())
    data = qt.OfflineDataset.open(FIXTURES / version)
    np.testing.assert_array_equal(data.observations, expected["states"])
    np.testing.assert_array_equal(data.actions, expected["actions"])
    np.testing.assert_array_equal(data.rewards, expected["rewards"])
    assert data.episodes.lengths.tolist() == facts["episode_lengths"]
    assert data.episodes.terminated.tolist() == facts["episode_terminated"]
    ends = np.cumsum(facts["episode_lengths"]) - 1
    assert np.flatnonzero(data.terminals).tolist() == ends[:2].tolist()
    assert np.flatnonzero(data.timeouts).tolist() == ends[2:].tolist()
    starts = data.episodes.starts
    assert [data.instructions[data.task_ids[s]] for s in starts] == facts["episode_tasks"]
    assert data.metadata["lerobot"]["camera"] == facts["video_key"]
    assert_frames_match(np.asarray(data.images), expected["frames"])


def test_v21_and_v3_fixtures_give_the_same_dataset() -> None:
    a = qt.OfflineDataset.open(FIXTURES / "v3_tiny")
    b = qt.OfflineDataset.open(FIXTURES / "v21_tiny")
    for name in ARRAYS:
        assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))
    assert a.instructions == b.instructions


def copy_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(FIXTURES / "v3_tiny", root)
    return root


def edit_info(root: Path, change) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    change(info)
    (root / "meta/info.json").write_text(json.dumps(info))


def edit_parquet(file: Path, column: str, values, kind=None) -> None:
    """Replace a column's values, in its own arrow type or ``kind``."""
    table = pq.read_table(file)
    i = table.column_names.index(column)
    kind = kind or table.schema.field(column).type
    pq.write_table(table.set_column(i, column, pa.array(values, kind)), file)


def test_missing_or_wrong_info_fields_are_named(tmp_path) -> None:
    root = copy_fixture(tmp_path)
    edit_info(root, lambda i: i.pop("fps"))
    with pytest.raises(DatasetError, match=r"info\.json lacks the field 'fps'"):
        qt.OfflineDataset.open(root)
    edit_info(root, lambda i: i.update(fps=10, codebase_version="v9.9"))
    with pytest.raises(DatasetError, match=r"info\.json: codebase_version 'v9.9'"):
        qt.OfflineDataset.open(root)
    edit_info(root, lambda i: i.update(codebase_version="v3.0"))
    with pytest.raises(DatasetError, match=r"info\.json: features has no 'observation.joints'"):
        read_lerobot(root, LeRobotColumns(state=("observation.joints",)))
    with pytest.raises(DatasetError, match=r"features has no 'observation.images.wrist'"):
        read_lerobot(root, LeRobotColumns(camera="wrist"))
    (root / "meta/info.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"info\.json is not valid JSON"):
        qt.OfflineDataset.open(root)


def test_no_reward_signal_is_an_error_unless_success_is_labelled(tmp_path) -> None:
    root = copy_fixture(tmp_path)
    edit_info(root, lambda i: i["features"].pop("next.reward"))
    with pytest.raises(DatasetError, match=r"info\.json: no reward signal.*label_success"):
        qt.OfflineDataset.open(root)
    data = read_lerobot(root, LeRobotColumns(label_success=True))
    ends = data.episodes.ends
    assert data.rewards[ends].tolist() == [1.0, 1.0, 1.0] and data.rewards.sum() == 3
    assert data.terminals[ends].all() and not data.timeouts.any()


def test_episode_table_disagreeing_with_the_data_is_named(tmp_path) -> None:
    root = copy_fixture(tmp_path)
    eps = root / "meta/episodes/chunk-000/file-000.parquet"
    edit_parquet(eps, "length", [7, 6, 9])
    with pytest.raises(DatasetError, match=r"meta/episodes: length of episode 1 is 6, the data"):
        qt.OfflineDataset.open(root)


def test_missing_frames_and_early_done_are_named(tmp_path) -> None:
    root = copy_fixture(tmp_path)
    data_file = root / "data/chunk-000/file-000.parquet"
    frames = pq.read_table(data_file).column("frame_index").to_pylist()
    frames[3] = 4  # frame 3 of episode 0 is missing, 4 comes twice
    edit_parquet(data_file, "frame_index", frames)
    with pytest.raises(
        DatasetError, match=r"file-000.parquet: frame_index of episode 0 is 4 at its frame 3"
    ):
        qt.OfflineDataset.open(root)
    root = copy_fixture(tmp_path / "b")
    data_file = root / "data/chunk-000/file-000.parquet"
    done = pq.read_table(data_file).column("next.done").to_pylist()
    done[2] = True
    edit_parquet(data_file, "next.done", done)
    with pytest.raises(
        DatasetError, match=r"next.done is set at frame 2 of episode 0, before its last"
    ):
        qt.OfflineDataset.open(root)


def test_missing_files_and_columns_are_named(tmp_path) -> None:
    root = copy_fixture(tmp_path)
    video = next((root / "videos").rglob("*.mp4"))
    video.unlink()
    with pytest.raises(FileNotFoundError, match=str(video)):
        qt.OfflineDataset.open(root)
    root = copy_fixture(tmp_path / "b")
    (root / "meta/tasks.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"tasks.parquet: no such file"):
        qt.OfflineDataset.open(root)
    root = copy_fixture(tmp_path / "c")
    data_file = root / "data/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(data_file).drop_columns(["task_index"]), data_file)
    with pytest.raises(DatasetError, match=r"file-000.parquet: no column 'task_index'"):
        qt.OfflineDataset.open(root)
    data_file.write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match=r"file-000.parquet: not a readable parquet file"):
        qt.OfflineDataset.open(root)


def test_video_of_another_size_than_info_says_is_named(tmp_path) -> None:
    root = copy_fixture(tmp_path)
    edit_info(root, lambda i: i["features"]["observation.images.top"].update(shape=[32, 32, 3]))
    with pytest.raises(
        DatasetError,
        match=r"frames are 64x64, .*info\.json features.observation.images.top says 32x32",
    ):
        qt.OfflineDataset.open(root)


def test_a_frame_missing_from_the_video_is_named(tmp_path) -> None:
    encode_video(tmp_path / "v.mp4", frames_of(5), fps=10)
    frames = VideoFrames([tmp_path / "v.mp4"], np.zeros(6, int), np.arange(6) / 10, (64, 64, 3), 10)
    assert frames[:5].shape == (5, 64, 64, 3)
    with pytest.raises(DatasetError, match=r"v.mp4: no frame at 0.5000 s"):
        frames[5]


@pytest.mark.parametrize("codec", ["libsvtav1", "h264"])
def test_video_random_access_equals_sequential_decoding(tmp_path, codec) -> None:
    source = frames_of(60)
    encode_video(tmp_path / "v.mp4", source, fps=30, settings=VideoSettings(codec=codec, gop=8))
    frames = VideoFrames(
        [tmp_path / "v.mp4"], np.zeros(60, int), np.arange(60) / 30, (64, 64, 3), 30
    )
    whole = np.asarray(frames)
    assert_frames_match(whole, source)
    rows = np.random.default_rng(0).integers(0, 60, 100)  # repeats, any order
    assert np.array_equal(frames[rows], whole[rows])
    assert np.array_equal(frames[-1], whole[-1])


def sampler_of(data: qt.OfflineDataset) -> TransitionSampler:
    disc = ActionDiscretizer(data.action_low, data.action_high, 16)
    return TransitionSampler(data, disc, gamma=0.9, n_step=1, window=2, images=True)


def test_worker_processes_give_the_same_batches_and_generator_state(tmp_path) -> None:
    path = write_lerobot(make_dataset(), tmp_path / "ds", fps=10)
    data = qt.OfflineDataset.open(path)
    batches = {}
    states = {}
    for workers in (0, 2):
        gen = torch.Generator().manual_seed(3)
        stream = BatchStream(sampler_of(data), 8, gen, workers=workers, part=slice(2, 6))
        batches[workers] = [next(stream) for _ in range(5)]
        states[workers] = gen.get_state()
        stream.close()
    assert torch.equal(states[0], states[2])  # a checkpoint now resumes at the same draw
    for a, b in zip(batches[0], batches[2], strict=True):
        assert len(a) == 4
        for field in ("obs", "bins", "reward_sum", "images", "next_images", "task"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field


def tiny_config(**kw) -> qt.TrainConfig:
    return qt.TrainConfig(
        observation="image",
        batch_size=8,
        n_bins=8,
        d_model=16,
        n_layers=1,
        n_heads=2,
        image_channels=(8, 16),
        image_tokens=2,
        log_every=1,
        lr_schedule="constant",
        **kw,
    )


@pytest.mark.slow
def test_training_from_video_resumes_exactly_with_workers(tmp_path) -> None:
    data = qt.OfflineDataset.open(write_lerobot(make_dataset(), tmp_path / "ds", fps=10))
    whole = qt.train(data, tiny_config(steps=6, data_workers=2), out_dir=tmp_path / "a")
    qt.train(data, tiny_config(steps=3, data_workers=2), out_dir=tmp_path / "b")
    resumed = qt.train(
        data, tiny_config(steps=6, data_workers=1), out_dir=tmp_path / "b", resume=True
    )
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    in_loop = qt.train(data, tiny_config(steps=6, data_workers=0))
    for p, q in zip(whole.model.parameters(), in_loop.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.slow
def test_cli_collects_lerobot_trains_from_it_and_exports(tmp_path, monkeypatch) -> None:
    """The README's LeRobot commands, relative paths included, at a few episodes."""
    from qtransformer.cli import main

    monkeypatch.chdir(tmp_path)
    episodes = ["--demos", "2", "--failures", "1", "--max-steps", "40", "--workers", "1"]
    camera = ["--image-size", "64", "--format", "lerobot"]
    main(["collect", "--tasks", "reach-v3", *episodes, *camera, "--out", "datasets"])
    folder = Path("datasets/metaworld-custom-reach-v3-v0")
    assert (folder / "meta/info.json").is_file()
    data = qt.OfflineDataset.open(folder)
    assert data.num_episodes == 3 and data.tasks == ["reach-v3"]
    assert data.env_settings() == {
        "max_steps": 40,
        "action_repeat": 1,
        "camera": "corner",
        "image_size": 64,
    }
    tiny = ["--steps", "2", *TINY_MODEL]
    main(["train", "--data", str(folder), "--observation", "image", "--out", "runs/lerobot", *tiny])
    main(["eval", "--agent", "runs/lerobot/agent", "--episodes", "1", "--num-envs", "1"])
    results = json.loads(Path("runs/eval/eval.json").read_text())["results"]
    assert results["reach-v3"]["episodes"] == 1
    main(["export", "--data", str(folder), "--out", "exported/reach"])
    again = qt.OfflineDataset.open("exported/reach")
    for name in ARRAYS:
        assert np.array_equal(np.asarray(getattr(again, name)), np.asarray(getattr(data, name)))
    with pytest.raises(SystemExit):  # exists: refused
        main(["export", "--data", str(folder), "--out", "exported/reach"])
    with pytest.raises(SystemExit):  # LeRobot options on a dataset that is not LeRobot
        main(
            ["train", "--data", "exported/reach/meta", "--label-success", "--out", "runs/x", *tiny]
        )


def test_state_as_plain_lists_reads_and_ragged_lists_are_named(tmp_path) -> None:
    """Parquet written without fixed-size lists (other writers than LeRobot's) reads the same;
    vectors of different lengths are refused naming the column."""
    root = copy_fixture(tmp_path)
    data_file = root / "data/chunk-000/file-000.parquet"
    rows = pq.read_table(data_file).column("observation.state").to_pylist()
    edit_parquet(data_file, "observation.state", rows, pa.list_(pa.float32()))
    expected = np.load(FIXTURES / "v3_tiny_expected.npz")
    np.testing.assert_array_equal(qt.OfflineDataset.open(root).observations, expected["states"])
    rows[4] = rows[4][:3]
    edit_parquet(data_file, "observation.state", rows, pa.list_(pa.float32()))
    with pytest.raises(
        DatasetError, match=r"'observation.state' holds vectors of lengths \[3, 4\]"
    ):
        qt.OfflineDataset.open(root)
