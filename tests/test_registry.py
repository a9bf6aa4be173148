"""The algorithm registry: param schemas and backend choice."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import mesmerize_widgets as mw
from mesmerize_widgets.algorithms import caiman_env, choose_backend, get_algorithm, registry
from mesmerize_widgets.algorithms.schema import Param, ParamSchema


def test_builtin_algorithms_are_registered_with_schemas():
    algos = registry.algorithms()
    assert {"summary", "preprocess"} <= set(algos)
    summary = get_algorithm("summary")
    assert summary.schema.defaults()["main"]["chunk_frames"] == 200
    assert all(p.doc for p in summary.schema.params)


def test_unknown_algo_names_the_choices():
    with pytest.raises(mw.UnknownAlgorithmError, match="available: .*summary"):
        get_algorithm("mcorrr")


SCHEMA = ParamSchema(
    algo="t",
    params=(
        Param("max_shifts", (6, 6), "tuple", "max shift", item="int", length=2),
        Param("fr", 30.0, "float", "frame rate", minimum=0),
        Param("K", 4, "int", "components"),
        Param("pw_rigid", False, "bool", "piecewise"),
        Param("border_nan", "copy", "any", "border", choices=("copy", True, False)),
        Param("gSig_filt", None, "tuple", "filter", nullable=True, item="int", length=2),
    ),
    extras={"refit": Param("refit", False, "bool", "refit")},
)


def test_validation_normalises_what_users_type():
    out = SCHEMA.validate({"main": {"max_shifts": [24, 24], "fr": 15, "K": np.int64(3)}, "refit": True})
    assert out == {"main": {"max_shifts": (24, 24), "fr": 15.0, "K": 3}, "refit": True}
    assert type(out["main"]["max_shifts"]) is tuple and type(out["main"]["K"]) is int
    assert SCHEMA.validate({"main": {}}, fill_defaults=True)["main"]["max_shifts"] == (6, 6)


@pytest.mark.parametrize(
    "params, message",
    [
        ([1, 2], "must be a dict"),
        ({"main": {"max_shift": (1, 1)}}, "unknown param 'max_shift'.*did you mean \\['max_shifts'\\]"),
        ({"max_shifts": (1, 1)}, "inside params\\['main'\\]"),
        ({"main": {"K": "four"}}, "'K'.*must be an integer"),
        ({"main": {"K": True}}, "'K'.*must be an integer"),
        ({"main": {"K": 2.5}}, "'K'.*must be an integer"),
        ({"main": {"fr": -1}}, "'fr'.*must be >= 0"),
        ({"main": {"pw_rigid": 1}}, "'pw_rigid'.*True or False"),
        ({"main": {"max_shifts": (1, 2, 3)}}, "'max_shifts'.*2 elements"),
        ({"main": {"max_shifts": None}}, "'max_shifts'.*cannot be None"),
        ({"main": {"border_nan": "reflect"}}, "'border_nan'.*one of"),
        ({"main": "x"}, "params\\['main'\\].*must be a dict"),
    ],
)
def test_bad_params_are_named(params, message):
    with pytest.raises(mw.ParamError, match=message):
        SCHEMA.validate(params)


def test_validation_does_not_mutate_the_input():
    params = {"main": {"max_shifts": [2, 2]}}
    SCHEMA.validate(params)
    assert params == {"main": {"max_shifts": [2, 2]}}


def test_without_caiman_auto_is_builtin_and_caiman_says_why(monkeypatch):
    monkeypatch.setattr(caiman_env, "caiman_installed", lambda: False)
    monkeypatch.setattr(registry, "caiman_installed", lambda: False)
    summary = get_algorithm("summary")
    assert choose_backend(summary, "auto") == "builtin"
    with pytest.raises(mw.BackendUnavailableError, match="conda-forge"):
        choose_backend(summary, "caiman")
    with pytest.raises(mw.BackendUnavailableError, match="no 'caiman' backend"):
        choose_backend(get_algorithm("preprocess"), "caiman")


def test_the_pypi_caiman_impostor_is_not_caiman(tmp_path, monkeypatch):
    # a top-level module named caiman without caiman.source_extraction (the MicroPython tool)
    (tmp_path / "caiman").mkdir()
    (tmp_path / "caiman" / "__init__.py").write_text("")
    monkeypatch.delitem(sys.modules, "caiman", raising=False)  # where the real one was imported
    monkeypatch.syspath_prepend(str(tmp_path))
    caiman_env.caiman_installed.cache_clear()
    try:
        assert caiman_env.caiman_installed() is False
    finally:
        caiman_env.caiman_installed.cache_clear()


def test_broken_caiman_environment_is_reported_before_a_run(monkeypatch):
    monkeypatch.setattr(caiman_env, "caiman_installed", lambda: True)
    versions = {"numpy": "1.26.4", "scipy": "1.17.1"}
    monkeypatch.setattr(caiman_env, "_version", lambda d: caiman_env.Version(versions[d]))
    problems = caiman_env.caiman_problems(needs_deconvolution=True)
    assert len(problems) == 1 and "scipy >= 1.17" in problems[0]
    assert caiman_env.caiman_problems(needs_deconvolution=False) == []


def test_default_backend_setting():
    mw.set_default_backend("auto")
    assert mw.get_default_backend() == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        mw.set_default_backend("gpu")
    mw.set_default_backend("builtin")
    try:
        assert choose_backend(get_algorithm("summary")) == "builtin"
    finally:
        mw.set_default_backend("auto")
