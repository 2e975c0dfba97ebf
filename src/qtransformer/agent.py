"""A trained Q-Transformer as a policy: greedy actions, Q-values, save and load.

Observations are state vectors ``(B, obs_dim)``, or dicts ``{"image": uint8 (B, H, W, C),
"state": (B, obs_dim)}`` (the keys the network reads), one frame or a window of frames per
row. Multi-task agents are told the task by name or id (``task=``) or by its instruction
(``instruction=``); an instruction-conditioned agent also acts on instructions it never saw,
embedding them with the language model once and caching the vector.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from qtransformer.atomic import file_digest, read_json, write_dir_atomically
from qtransformer.discretize import ActionDiscretizer
from qtransformer.model import ModelConfig, QTransformer

FORMAT = "qtransformer-agent-v1"

TaskArg = Union[str, int, Sequence[Union[str, int]], None]  # noqa: UP007
InstructionArg = Union[str, Sequence[str], None]  # noqa: UP007
Observations = Union[np.ndarray, Mapping[str, np.ndarray]]  # noqa: UP007


def resolve_task_ids(task: TaskArg, tasks: Sequence[str], batch: int) -> np.ndarray:
    """Task names or ids, one for all rows or one per row, -> ``(batch,)`` int64 ids.

    Raises:
        ValueError: naming the unknown task, the id out of range, or a count mismatch.
    """
    if task is None:
        raise ValueError(f"this policy was trained on tasks {list(tasks)}: pass task=")
    one = isinstance(task, (str, int, float, np.integer, np.floating))
    items: list[Any]
    if one:
        items = [task]  # checked once, even for an empty batch, then repeated
    else:
        try:
            items = list(task)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(
                f"task must be a task name or id, or one per row, got {type(task).__name__}"
            ) from None
    if not one and len(items) != batch:
        raise ValueError(f"got {len(items)} tasks for a batch of {batch}")
    ids = []
    for t in items:
        if isinstance(t, bool) or not isinstance(t, (str, int, np.integer)):
            raise ValueError(
                f"task must be a task name or an integer id, got {t!r} ({type(t).__name__}); "
                f"known tasks: {list(tasks)}"
            )
        if isinstance(t, str):
            if t not in tasks:
                raise ValueError(f"unknown task {t!r}; known tasks: {list(tasks)}")
            ids.append(list(tasks).index(t))
        elif not 0 <= int(t) < len(tasks):
            raise ValueError(f"task id {t} out of range for {len(tasks)} tasks")
        else:
            ids.append(int(t))
    return np.asarray(ids * batch if one else ids, np.int64)


def _instruction_list(instruction: str | Sequence[str], batch: int) -> list[str]:
    if isinstance(instruction, str):
        texts = [instruction] * batch
        if batch == 0:
            return [instruction][:0]
    elif isinstance(instruction, (list, tuple)) and all(isinstance(t, str) for t in instruction):
        texts = list(instruction)
    else:
        raise ValueError(
            f"instruction must be a string, or a list of strings (one per row), got "
            f"{type(instruction).__name__}"
        )
    if len(texts) != batch:
        raise ValueError(f"got {len(texts)} instructions for a batch of {batch}")
    return texts


def _split_observations(observations: Observations) -> tuple[Any, Any]:
    """(state, image) from an array (state only) or a dict with keys 'state' and/or 'image'."""
    if isinstance(observations, Mapping):
        unknown = set(observations) - {"state", "image"}
        if unknown:
            raise ValueError(
                f"observation keys must be 'state' and/or 'image', got {sorted(observations)}"
            )
        return observations.get("state"), observations.get("image")
    return observations, None


@dataclass
class Exploration:
    """How an acting agent draws each action dimension's bin, one dimension at a time.

    With probability ``epsilon`` a uniformly random bin; otherwise a bin drawn with
    probability proportional to ``exp(Q / temperature)`` over the dimension's Q-values
    (normalized to [0, 1], the network's own scale), or the best one at temperature 0. At
    ``temperature=0, epsilon=0`` the agent acts greedily. Draws come from ``generator``, so
    exploration is reproducible and resumable.
    """

    temperature: float = 0.0
    epsilon: float = 0.0
    generator: torch.Generator = field(default_factory=torch.Generator)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 <= self.epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 and self.epsilon == 0

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Bins ``(B,)`` from one dimension's logits ``(B, N)``."""
        device = logits.device
        z = logits.detach().float().cpu()
        if self.temperature > 0:
            p = torch.softmax(torch.sigmoid(z) / self.temperature, dim=-1)
            bins = torch.multinomial(p, 1, generator=self.generator)[:, 0]
        else:
            bins = z.argmax(dim=-1)
        if self.epsilon > 0:
            coin = torch.rand(len(z), generator=self.generator) < self.epsilon
            uniform = torch.randint(z.shape[-1], (len(z),), generator=self.generator)
            bins = torch.where(coin, uniform, bins)
        return bins.to(device)


class Agent:
    """Greedy Q-Transformer policy over continuous actions.

    Args:
        model: The trained Q network.
        discretizer: Bin layout used in training.
        q_max: Upper end of the value range that the network's [0, 1] output maps onto.
        train_config: The training configuration, kept for the record.
        tasks: Task names, in the order of the task ids used in training.
        instructions: One instruction per task.
        embedding_model: Name of the language model that made the task feature table, for
            instruction-conditioned agents (new instructions are embedded with it).
        camera: Camera of the training images, so evaluation renders the same view.
        env: How the training data's environment was set up (``max_steps``,
            ``action_repeat``, ``camera``, ``image_size``: what
            :meth:`qtransformer.data.dataset.OfflineDataset.env_settings` records);
            evaluation uses them unless told otherwise.
        q_min: Lower end of the value range (0 for non-negative rewards): the network's
            output ``x`` stands for ``q_min + (q_max - q_min) x``.
        act_temperature: How :meth:`act` turns each dimension's Q-values into an action
            value: 0 takes the value of the best bin; T > 0 the mean of the bin values weighted
            by softmax(Q / T), Q in [0, 1] (:meth:`QTransformer.decode`). None: the training
            config's ``act_temperature``, and 0 for agents saved before it existed (they act
            as they did). Behaviour-cloning agents always take their most likely bin.
    """

    def __init__(
        self,
        model: QTransformer,
        discretizer: ActionDiscretizer,
        q_max: float,
        train_config: dict[str, Any] | None = None,
        tasks: Sequence[str] = ("task",),
        instructions: Sequence[str] | None = None,
        embedding_model: str | None = None,
        camera: str | None = None,
        env: Mapping[str, Any] | None = None,
        q_min: float = 0.0,
        act_temperature: float | None = None,
    ) -> None:
        self.model = model.eval()
        self.discretizer = discretizer
        self.q_min = float(q_min)
        self.q_max = float(q_max)
        self.train_config = dict(train_config or {})
        self.tasks = list(tasks)
        self.instructions = list(instructions) if instructions is not None else list(tasks)
        self.embedding_model = embedding_model
        self.env: dict[str, Any] = dict(env or {})
        self.camera = camera if camera is not None else self.env.get("camera")
        if act_temperature is None:
            act_temperature = self.train_config.get("act_temperature", 0.0)
        self.act_temperature = act_temperature  # type: ignore[assignment]  # checked there
        self._decode = self.model.decode
        self.instruction_cache: dict[str, np.ndarray] = {}
        """Instruction -> feature vector; the known ones are the rows of the task table."""
        if self.reads_instructions:
            table = model.task_table.detach().cpu().numpy()
            self.instruction_cache = {
                text: table[i] for i, text in enumerate(self.instructions[: len(table)])
            }

    @property
    def act_temperature(self) -> float:
        """Temperature of :meth:`act`'s Q-weighted action values (0: the best bin's)."""
        return self._act_temperature

    @act_temperature.setter
    def act_temperature(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"act_temperature must be a number, got {value!r}")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"act_temperature must be finite and >= 0, got {value}")
        self._act_temperature = float(value)

    def compile(self) -> Agent:
        """Decode with ``torch.compile``: the whole greedy decoding (prefix, every dimension,
        the attention cache) becomes one graph per batch size, with CUDA graphs on a GPU.
        On a CPU the graph runs from inductor's C++ wrapper, without Python between its
        kernels (1.6x faster at batch 1, benchmarks/decode_latency.py). The first call at a
        batch size compiles (a minute or two on a CPU); the bins are those of the uncompiled
        decoding. Returns the agent."""
        if self.device.type == "cuda":
            self._decode = torch.compile(self.model.decode, dynamic=False, mode="reduce-overhead")
        else:
            self._decode = torch.compile(
                self.model.decode, dynamic=False, options={"cpp_wrapper": True}
            )
        return self

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def reads_instructions(self) -> bool:
        """Conditioned on instruction embeddings, so any instruction can be acted on."""
        return self.config.task_dim > 0 and self.config.task_features == "instruction"

    @property
    def loss(self) -> str:
        """``"q"`` for Q-Transformer, ``"bc"`` for a behaviour-cloning network."""
        return str(self.train_config.get("loss", "q"))

    def _windows(self, observations: np.ndarray | torch.Tensor) -> torch.Tensor:
        try:
            raw = np.asarray(observations)
        except ValueError as e:  # a ragged list
            raise ValueError(f"observations must be a rectangular array of numbers ({e})") from None
        if raw.dtype.kind not in "biuf":  # complex, times, text and objects are no state
            raise ValueError(
                f"observations must be numeric ('state' vectors), got dtype {raw.dtype}"
            )
        state = np.asarray(raw, dtype=np.float32)
        if not state.flags.writeable:  # memory-mapped rows: torch wants writable memory
            state = state.copy()
        obs = torch.as_tensor(state, device=self.device)
        w, d = self.config.window, self.config.obs_dim
        bad = ~torch.isfinite(obs)
        if obs.dim() and bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ValueError(f"observations contain NaN or inf at row {row} ('state' vectors)")
        if obs.dim() == 2 and obs.shape[1] == d:
            # A single frame: as at an episode start, the window repeats it.
            return obs[:, None].expand(-1, w, -1)
        if obs.dim() == 3 and obs.shape[1:] == (w, d):
            return obs
        raise ValueError(
            f"observations must have shape (B, {d}) or (B, {w}, {d}), got {tuple(obs.shape)}"
        )

    def _image_windows(self, images: Any) -> torch.Tensor:
        a = np.asarray(images)
        shape, w = self.config.image_shape, self.config.window
        assert shape is not None
        if a.dtype != np.uint8:
            raise ValueError(f"observation 'image' must be uint8 (0..255), got {a.dtype}")
        if a.ndim == 4 and a.shape[1:] == shape:
            # A single frame: as at an episode start, the window repeats it.
            a = np.repeat(a[:, None], w, axis=1)
        elif not (a.ndim == 5 and a.shape[1:] == (w, *shape)):
            raise ValueError(
                f"observation 'image' must have shape (B, {', '.join(map(str, shape))}) or "
                f"(B, {w}, {', '.join(map(str, shape))}), got {a.shape}"
            )
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def _inputs(
        self, observations: Observations
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
        """State windows, image windows (each None when not read) and the batch size."""
        cfg = self.config
        state, image = _split_observations(observations)
        if cfg.uses_images and image is None:
            if not isinstance(observations, Mapping):
                raise ValueError(
                    f"this agent reads camera images (observation={cfg.observation!r}): pass a "
                    "dict {'image': uint8 (B, H, W, C)"
                    + (", 'state': (B, obs_dim)}" if cfg.uses_state else "}")
                )
            raise ValueError(
                f"observations lack the key 'image' (this agent reads {cfg.observation!r})"
            )
        if cfg.uses_state and state is None:
            raise ValueError(
                f"observations lack the key 'state' (this agent reads {cfg.observation!r})"
            )
        obs = self._windows(state) if cfg.uses_state else None
        images = self._image_windows(image) if cfg.uses_images else None
        sizes = {t.shape[0] for t in (obs, images) if t is not None}
        if len(sizes) != 1:
            raise ValueError(f"'state' and 'image' have different batch sizes: {sorted(sizes)}")
        return obs, images, sizes.pop()

    def embed_instructions(self, instructions: Sequence[str]) -> np.ndarray:
        """Feature vectors ``(len(instructions), task_dim)`` for an instruction-conditioned
        agent: cached ones as they are, new ones embedded now with the language model.

        Raises:
            ValueError: when the agent is not conditioned on instructions.
            LanguageModelUnavailable: for a new instruction without the language extra.
        """
        if not self.reads_instructions:
            raise ValueError("this agent is not conditioned on instruction embeddings")
        new = [t for t in dict.fromkeys(instructions) if t not in self.instruction_cache]
        if new:
            from qtransformer.language import MODEL_NAME, embed

            if self.embedding_model not in (None, MODEL_NAME):
                raise ValueError(
                    f"this agent was trained on {self.embedding_model!r} embeddings; new "
                    f"instructions can only be embedded with {MODEL_NAME!r}"
                )
            for text, vector in zip(new, embed(new), strict=True):
                self.instruction_cache[text] = vector
        return np.stack([self.instruction_cache[t] for t in instructions])

    def _unknown(self, instruction: str | Sequence[str], texts: list[str]) -> list[str]:
        """The given instructions this agent was not trained on (one given for all rows is
        checked even when there are no rows)."""
        given = [instruction] if isinstance(instruction, str) else texts
        return sorted(set(given) - set(self.instructions))

    def _condition(
        self, task: TaskArg, instruction: InstructionArg, batch: int
    ) -> torch.Tensor | None:
        """Task ids ``(B,)`` or feature vectors ``(B, task_dim)``; None without a task token."""
        if task is not None and instruction is not None:
            raise ValueError("pass task= or instruction=, not both")
        if self.model.task_proj is None:
            # One task: nothing to condition on, but a task or instruction it does not know
            # is a mistake to report, not to ignore.
            if task is not None:
                resolve_task_ids(task, self.tasks, batch)
            if instruction is not None:
                unknown = self._unknown(instruction, _instruction_list(instruction, batch))
                if unknown:
                    raise ValueError(
                        f"unknown instructions {unknown}: this agent was trained on one task, "
                        f"{self.tasks[0]!r} ({self.instructions[0]!r})"
                    )
            return None
        if instruction is None:
            ids = resolve_task_ids(task, self.tasks, batch)
            return torch.as_tensor(ids, dtype=torch.long, device=self.device)
        texts = _instruction_list(instruction, batch)
        if self.reads_instructions:
            return torch.from_numpy(self.embed_instructions(texts)).to(self.device)
        unknown = self._unknown(instruction, texts)
        if unknown:
            raise ValueError(
                f"unknown instructions {unknown}: this agent conditions on one-hot task codes "
                f"and knows only {self.instructions} (train with task_features='instruction' "
                "to act on new ones)"
            )
        index = [self.instructions.index(t) for t in texts]
        return torch.as_tensor(index, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def _decoded(
        self,
        observations: Observations,
        task: TaskArg,
        instruction: InstructionArg,
        explore: Exploration | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[Any, ...]]:
        """Bins, Q (network scale), positions and the network inputs of one decoding."""
        obs, images, B = self._inputs(observations)
        cond = self._condition(task, instruction, B)
        if explore is not None and not explore.greedy:
            bins, q = self.model.greedy(obs, cond, images=images, choose=explore.choose)
            return bins, q, bins.float(), (obs, cond, images)
        t = self.act_temperature if self.loss == "q" else 0.0
        bins, q, position = self._decode(obs, cond, images=images, temperature=t)
        return bins, q, position, (obs, cond, images)

    @torch.no_grad()
    def act_bins(
        self,
        observations: Observations,
        task: TaskArg = None,
        instruction: InstructionArg = None,
        explore: Exploration | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Greedy bins ``(B, dA)`` and the Q of each chosen bin ``(B, dA)``; with ``explore``
        each dimension's bin is drawn as :class:`Exploration` says instead, the following
        dimensions decoded given the drawn ones.

        For a behaviour-cloning agent (``loss="bc"``) the second array holds the
        probability of each chosen bin instead.
        """
        bins, q, _, (obs, cond, images) = self._decoded(observations, task, instruction, explore)
        if self.loss == "bc":
            logits = self.model(obs, bins, cond, images, logits=True)[:, 0]  # (B, dA, N)
            chosen = logits.log_softmax(-1).gather(-1, bins[..., None])[..., 0]
            return bins.cpu().numpy(), chosen.exp().cpu().numpy()
        return bins.cpu().numpy(), self._value(q.cpu().numpy())

    def act(
        self,
        observations: Observations,
        task: TaskArg = None,
        instruction: InstructionArg = None,
        explore: Exploration | None = None,
    ) -> np.ndarray:
        """Continuous actions ``(B, dA)``: per dimension the best bin's value, or the
        Q-weighted mean of the bin values when :attr:`act_temperature` > 0; with ``explore``,
        the values of the bins drawn as it says.

        Args:
            observations: ``(B, obs)`` or ``(B, w, obs)`` state vectors, or a dict with
                ``"image"`` (uint8 ``(B, H, W, C)`` or ``(B, w, H, W, C)``) and/or
                ``"state"``, as the agent's ``observation`` setting reads them.
            task: For multi-task agents: a task name or id, or one per row.
            instruction: Instead of ``task``: an instruction, or one per row. Known ones use
                the cached embedding; an instruction-conditioned agent embeds new ones.
        """
        _, _, position, _ = self._decoded(observations, task, instruction, explore)
        return self.discretizer.to_continuous(position.cpu().numpy())

    @torch.no_grad()
    def q_values(
        self,
        observations: Observations,
        bins: np.ndarray,
        task: TaskArg = None,
        instruction: InstructionArg = None,
    ) -> np.ndarray:
        """``(B, dA, N)``: row i is Q of every bin of dim i given ``bins[:, :i]``."""
        if self.loss == "bc":
            raise ValueError(
                "this agent was trained by behaviour cloning (loss='bc'): its outputs are bin "
                "logits, not Q-values"
            )
        try:
            raw = np.asarray(bins)
        except ValueError as e:  # a ragged list
            raise ValueError(f"bins must be a rectangular array of integers ({e})") from None
        if raw.dtype == bool or not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"bins must be integers, got dtype {raw.dtype}")
        b = torch.as_tensor(raw.astype(np.int64), device=self.device)
        if b.dim() != 2 or b.shape[1] != self.config.action_dim:
            raise ValueError(
                f"bins must have shape (B, {self.config.action_dim}), got {tuple(b.shape)}"
            )
        if b.numel() and (b.min() < 0 or b.max() >= self.config.n_bins):
            raise ValueError(f"bins must lie in [0, {self.config.n_bins - 1}]")
        obs, images, B = self._inputs(observations)
        if b.shape[0] != B:
            raise ValueError(f"bins has {b.shape[0]} rows for {B} observations")
        cond = self._condition(task, instruction, B)
        q = self.model(obs, b, cond, images).amin(dim=1)  # (B, dA, N)
        return self._value(q.cpu().numpy())

    def _value(self, q: np.ndarray) -> np.ndarray:
        """Network output in [0, 1] -> Q in the value range ``[q_min, q_max]``."""
        return self.q_min + (self.q_max - self.q_min) * q

    def history(self, num_envs: int) -> ObservationHistory:
        """A stateful helper that keeps each environment's last ``window`` observations."""
        return ObservationHistory(self, num_envs)

    def save(self, path: str | Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` into directory ``path`` atomically."""

        def write(tmp: Path) -> None:
            self.write_files(tmp)

        write_dir_atomically(path, write)

    def write_files(self, directory: Path) -> str:
        """Write ``model.safetensors`` and ``config.json`` into ``directory``; returns the
        weights' SHA-256 (recorded in the config, checked on loading)."""
        save_file(self.model.state_dict(), str(directory / "model.safetensors"))
        digest = file_digest(directory / "model.safetensors")
        meta = {
            "model_sha256": digest,
            "format": FORMAT,
            "model": asdict(self.config),
            "action_low": self.discretizer.low.tolist(),
            "action_high": self.discretizer.high.tolist(),
            "q_min": self.q_min,
            "q_max": self.q_max,
            "tasks": self.tasks,
            "instructions": self.instructions,
            "embedding_model": self.embedding_model,
            "camera": self.camera,
            "env": self.env,
            "train": self.train_config,
            "act_temperature": self.act_temperature,
        }
        (directory / "config.json").write_text(json.dumps(meta, indent=2))
        return digest


def load_agent(path: str | Path, device: str | torch.device = "cpu") -> Agent:
    """Load an agent saved by :meth:`Agent.save` or a training checkpoint directory."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path} holds no config.json: not a saved agent")
    meta = read_json(cfg_file)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{cfg_file} has format {found!r}, expected {FORMAT!r}")
    try:
        model_cfg = ModelConfig(**meta["model"])
        model = QTransformer(model_cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{cfg_file}: field 'model' does not describe a model ({e})") from None
    q_max = meta.get("q_max")
    q_min = meta.get("q_min", 0.0)  # agents saved before value ranges existed start at 0
    for name, v in (("q_min", q_min), ("q_max", q_max)):
        if not (isinstance(v, (int, float)) and abs(v) < float("inf")):
            raise ValueError(f"{cfg_file} has {name} = {v!r}: it must be a finite number")
    if not q_min < q_max:
        raise ValueError(
            f"{cfg_file} has q_min = {q_min!r} and q_max = {q_max!r}: q_min must be below q_max"
        )
    value_range = (float(q_min), float(q_max))  # type: ignore[arg-type]  # checked above
    weights_file = path / "model.safetensors"
    if not weights_file.is_file():
        raise FileNotFoundError(f"{weights_file}: no such file (an incomplete agent folder)")
    digest = meta.get("model_sha256")
    if digest is not None and file_digest(weights_file) != digest:
        raise ValueError(
            f"{weights_file} does not match the checksum in {cfg_file.name} (damaged or "
            "partly copied)"
        )
    try:
        weights = load_file(str(weights_file))
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise ValueError(
            f"{weights_file} is not a readable safetensors file ({type(e).__name__}: {e})"
        ) from None
    bad = [name for name, t in weights.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(
            f"{weights_file} holds NaN or inf weights ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}): the run that saved it diverged"
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ValueError(f"{weights_file} does not fit the model in {cfg_file.name}: {e}") from None
    model.to(device)
    train = meta.get("train") or {}
    # Agents saved before bin layouts existed used bin centres.
    layout = train.get("bin_layout", "centres") if isinstance(train, dict) else None
    try:
        disc = ActionDiscretizer(
            np.asarray(meta["action_low"]),
            np.asarray(meta["action_high"]),
            model_cfg.n_bins,
            layout,  # type: ignore[arg-type]  # checked by ActionDiscretizer
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"{cfg_file}: fields 'action_low', 'action_high' and 'train.bin_layout' do not "
            f"give the action bins ({type(e).__name__}: {e})"
        ) from None
    return Agent(
        model,
        disc,
        value_range[1],
        meta.get("train"),
        meta.get("tasks", ["task"]),
        meta.get("instructions"),
        meta.get("embedding_model"),
        meta.get("camera"),
        meta.get("env"),
        q_min=value_range[0],
        act_temperature=_act_temperature(meta, cfg_file),
    )


def _act_temperature(meta: dict[str, Any], cfg_file: Path) -> float | None:
    """The saved ``act_temperature`` (None when absent: the training config's, else 0)."""
    t = meta.get("act_temperature")
    if t is None:
        return None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t >= 0):
        raise ValueError(f"{cfg_file} has act_temperature = {t!r}: it must be a number >= 0")
    return float(t)


class ObservationHistory:
    """Keeps the last ``window`` observations of each of ``num_envs`` environments.

    Observations are whatever :meth:`Agent.act` takes for one frame: state vectors
    ``(num_envs, obs_dim)`` or dicts with ``"image"`` ``(num_envs, H, W, C)`` uint8 and/or
    ``"state"``. Usage with a vector environment::

        history = agent.history(num_envs)
        obs, _ = envs.reset()
        for _ in range(steps):
            obs, reward, terminated, truncated, _ = envs.step(history.act(obs))
            history.reset(terminated | truncated)  # those envs start a new episode
    """

    def __init__(self, agent: Agent, num_envs: int) -> None:
        self.agent = agent
        cfg = agent.config
        w = cfg.window
        self.frames: np.ndarray | None = None
        """State windows ``(num_envs, w, obs_dim)`` (None when the agent reads no state)."""
        self.images: np.ndarray | None = None
        """Image windows ``(num_envs, w, H, W, C)`` uint8 (None when it reads no images)."""
        if cfg.uses_state:
            self.frames = np.zeros((num_envs, w, cfg.obs_dim), dtype=np.float32)
        if cfg.uses_images:
            assert cfg.image_shape is not None
            self.images = np.zeros((num_envs, w, *cfg.image_shape), dtype=np.uint8)
        self.num_envs = num_envs
        self.fresh = np.ones(num_envs, dtype=bool)

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Mark environments (all, or where ``mask`` is True) as starting a new episode."""
        if mask is None:
            self.fresh[:] = True
        else:
            self.fresh |= np.asarray(mask, dtype=bool)

    def _push(self, buffer: np.ndarray, frame: Any, name: str) -> None:
        new = np.asarray(frame)
        expected = (self.num_envs, *buffer.shape[2:])
        if new.shape != expected:
            raise ValueError(f"{name} must have shape {expected}, got {new.shape}")
        if buffer.dtype == np.uint8 and new.dtype != np.uint8:
            raise ValueError(f"observation 'image' must be uint8 (0..255), got {new.dtype}")
        buffer[:, :-1] = buffer[:, 1:].copy()
        buffer[:, -1] = new
        buffer[self.fresh] = new[self.fresh][:, None]

    def act(
        self,
        observations: Observations,
        task: TaskArg = None,
        instruction: InstructionArg = None,
    ) -> np.ndarray:
        """Append one observation per environment and return greedy actions ``(num_envs, dA)``.

        A fresh environment's window is filled with its first observation. ``task`` and
        ``instruction`` are as in :meth:`Agent.act`.
        """
        state, image = _split_observations(observations)
        window: dict[str, np.ndarray] = {}
        if self.images is not None:
            if image is None:
                raise ValueError("observations lack the key 'image' (this agent reads images)")
            self._push(self.images, image, "observation 'image'")
            window["image"] = self.images
        if self.frames is not None:
            if state is None:
                raise ValueError("observations lack the key 'state' (this agent reads state)")
            self._push(self.frames, state, "observations")
            window["state"] = self.frames
        self.fresh[:] = False
        return self.agent.act(window, task, instruction)
