"""Conformance tests that iterate ``RECIPES``: a new recipe is tested here without a new test.

Each recipe is built through the command line from the minimal source its ``write_example``
writes, and the result must load as training data."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from betavae.data.cli import add_parser
from betavae.data.prepared import (
    ATTRIBUTES,
    load_attributes,
    load_names,
    load_prepared,
    read_manifest,
)
from betavae.data.recipes import RECIPES


def _prepare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="betavae")
    add_parser(parser.add_subparsers(dest="command"))
    return parser


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_builds_a_loadable_dataset_from_its_example(name, tmp_path, capsys):
    source = RECIPES[name].write_example(tmp_path / "source")
    out = tmp_path / "prepared"
    command = ["prepare", name, "--source", str(source), "--out", str(out), "--size", "8"]
    args = _prepare_parser().parse_args([*command, "--workers", "1"])
    assert args.func(args) == 0, capsys.readouterr().err
    manifest = read_manifest(out)
    data = load_prepared(out)
    rows = data.images.shape[0]
    assert manifest["recipe"] == name and manifest["counts"]["skipped"] == 0
    assert data.images.shape[1:3] == (8, 8) and data.images.dtype == np.uint8
    assert len(data.train_indices) > 0 and len(data.val_indices) > 0
    assert sorted([*data.train_indices, *data.val_indices]) == list(range(rows))
    assert len(load_names(out)) == rows
    assert manifest["options"]["recipe"] == {key: getattr(args, key) for key in RECIPES[name].DEFAULTS}
    if ATTRIBUTES in manifest["files"]:
        attribute_names, values = load_attributes(out)
        assert values.shape == (rows, len(attribute_names))
    assert args.func(args) == 0 and "up to date" in capsys.readouterr().out


def test_prepare_help_lists_every_recipe_and_each_recipe_has_its_own(capsys):
    parser = _prepare_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["prepare", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for name, module in RECIPES.items():
        assert f"{name} {module.HELP}" in shown
        with pytest.raises(SystemExit):
            parser.parse_args(["prepare", name, "--help"])
        first_line = module.__doc__.strip().splitlines()[0]
        assert first_line in capsys.readouterr().out


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--max-pixels", "-5", "is not 0 (no limit) or a positive whole number"),
        ("--max-pixels", "many", "is not 0 (no limit) or a positive whole number"),
        ("--val-fraction", "abc", "'abc' is not a number"),
        ("--val-fraction", "1.5", "must lie strictly between 0 and 1"),
    ],
)
def test_bad_common_options_are_one_line_naming_the_option(option, value, says, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _prepare_parser().parse_args(
            ["prepare", "folder", "--source", str(tmp_path), "--out", str(tmp_path / "out"), option, value]
        )
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {option}: " in error and says in error


def test_max_pixels_zero_means_no_limit(tmp_path):
    args = _prepare_parser().parse_args(
        ["prepare", "folder", "--source", str(tmp_path), "--out", str(tmp_path / "o"), "--max-pixels", "0"]
    )
    assert args.max_pixels == 0
