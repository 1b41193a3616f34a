"""A command's own options (``monitor.*``, ``rerate.*``) taken out of the run's overrides."""

import pytest

from credit_data.errors import ConfigError
from experiments.monitor import MonitorSettings
from experiments.monitor import split_args as monitor_args
from experiments.rerate import RerateSettings
from experiments.rerate import split_args as rerate_args

pytestmark = pytest.mark.unit


def test_each_option_takes_its_defaults_type_and_the_rest_are_overrides():
    settings, rest = rerate_args(["rerate.grade_fall=3", "data.period=2", "rerate.delinquency=no",
                                  "rerate.drop_points=25", "rerate.out=book"])
    assert settings == RerateSettings(drop_points=25.0, grade_fall=3, delinquency=False,
                                      out="book")
    assert rest == ["data.period=2"]
    assert monitor_args(["monitor.min_count=20", "seed=1"]) == \
        (MonitorSettings(min_count=20), ["seed=1"])


@pytest.mark.parametrize(("args", "message"), [
    (["monitor.bins=5"], r"monitor\.bins: not an option \(options: monitor\.act, "
                         r"monitor\.epsilon, monitor\.min_count, monitor\.out, "
                         r"monitor\.watch\)"),
    (["monitor.epsilon=0"], r"monitor\.epsilon must be positive, got 0\.0"),
    (["monitor.act=high"], r"monitor\.act=high: not a number"),
    (["monitor.min_count=2.5"], r"monitor\.min_count=2\.5: not a number"),
    (["monitor.watch=0.3"], r"monitor\.watch \(0\.3\) must lie in \(0, monitor\.act \(0\.25\)\)"),
])
def test_a_bad_option_is_named(args, message):
    with pytest.raises(ConfigError, match=message):
        monitor_args(args)
