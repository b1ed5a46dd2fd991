"""Every option of kd-edge, each with one owner: the settings dataclass of its stage.

    data.py      DataSettings: which data, and how it is prepared
    training.py  RunSettings, NetworkSettings, OptimSettings, KDSettings; TeacherSettings and
                 DistillSettings (kd-edge's recipe as their defaults) and the presets that change them
    deploy.py    ExportSettings, QuantizeSettings, QATSettings, BundleSettings, DeploySettings, ArmSettings
    bench.py     BenchSettings, PredictSettings
    search.py    SweepSettings, SearchSettings
    pipeline.py  PipelineSettings: the stages' settings together
    commands.py  which settings each command exposes, under which names; resolve(): flags > file > preset
    files.py     the config file (kd-edge.toml), read and written in the same form
    fields.py    knob(): a field's default and help; options_of(), apply(): options onto settings
    parse.py     option texts with units and lists (2ms, 64M, 20m, 0,1)
    schedules.py temperature and alpha schedules (linear:END, ...)

A settings object holds knobs only (the paths a command reads and writes are its arguments),
validates itself on construction (a ``ConfigError`` that names the option), and is frozen.
Standard library only: ``kd-edge --help`` reads it without importing torch.
"""

from kd_edge.settings.bench import BenchSettings, PredictSettings
from kd_edge.settings.data import DataSettings
from kd_edge.settings.deploy import (
    ArmSettings,
    BundleSettings,
    DeploySettings,
    ExportSettings,
    QATSettings,
    QuantizeSettings,
)
from kd_edge.settings.pipeline import PipelineSettings
from kd_edge.settings.search import SearchSettings, SweepSettings
from kd_edge.settings.training import (
    DistillSettings,
    KDSettings,
    NetworkSettings,
    OptimSettings,
    RunSettings,
    TeacherSettings,
    preset,
)

__all__ = [
    "ArmSettings",
    "BenchSettings",
    "BundleSettings",
    "DataSettings",
    "DeploySettings",
    "DistillSettings",
    "ExportSettings",
    "KDSettings",
    "NetworkSettings",
    "OptimSettings",
    "PipelineSettings",
    "PredictSettings",
    "QATSettings",
    "QuantizeSettings",
    "RunSettings",
    "SearchSettings",
    "SweepSettings",
    "TeacherSettings",
    "preset",
]
