"""Q-Transformer: offline RL with an autoregressive Transformer Q-function."""

from qtransformer.agent import Agent, ObservationHistory, load_agent
from qtransformer.config import TrainConfig
from qtransformer.data.dataset import OfflineDataset
from qtransformer.data.sampler import Batch
from qtransformer.discretize import ActionDiscretizer
from qtransformer.learner import Learner
from qtransformer.model import ModelConfig, QTransformer
from qtransformer.trainer import train

__all__ = [
    "ActionDiscretizer",
    "Agent",
    "Batch",
    "Learner",
    "ModelConfig",
    "ObservationHistory",
    "OfflineDataset",
    "QTransformer",
    "TrainConfig",
    "load_agent",
    "train",
]
__version__ = "0.1.0"
