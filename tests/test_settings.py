"""Settings files ({optimizer: {hyper-parameter: value}}): what is read, and every way a file is refused."""

from __future__ import annotations

import json
import os

import pytest

from kfac_ref.experiments.arguments import parse_value
from kfac_ref.settings import MAX_BYTES
from kfac_ref.settings import read_settings_file as _read


def read_settings_file(path):
    """As the command line reads a settings file: values typed and checked by its parse_value."""
    return _read(path, parse_value)


VALID = {"kfac": {"lr": 0.3, "T_inv": 5, "kl_clip": None}, "sgd": {"momentum": 0.9}}
TOML = """
[kfac]
lr = 0.3
T_inv = 5

[sgd]
momentum = 0.9
"""


# ---- what is read (the command line's behaviour, kept) ------------------------------------------
@pytest.mark.parametrize("name", ["s.json", "S.JSON", "s.Json"])
def test_a_json_file_is_read_by_any_case_of_its_suffix(tmp_path, name):
    (tmp_path / name).write_text(json.dumps(VALID))
    assert read_settings_file(tmp_path / name) == VALID


@pytest.mark.parametrize("name", ["s.toml", "S.TOML"])
def test_a_toml_file_is_read_by_any_case_of_its_suffix(tmp_path, name):
    (tmp_path / name).write_text(TOML)
    got = read_settings_file(tmp_path / name)
    assert got == {"kfac": {"lr": 0.3, "T_inv": 5}, "sgd": {"momentum": 0.9}}
    assert type(got["kfac"]["T_inv"]) is int


def test_string_values_are_typed_by_the_optimizer(tmp_path):
    (tmp_path / "s.json").write_text('{"kfac": {"lr": "0.5", "kl_clip": "none"}}')
    assert read_settings_file(tmp_path / "s.json") == {"kfac": {"lr": 0.5, "kl_clip": None}}


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"adamw": {"lr": 1}}', r"unknown optimizer 'adamw': choose from"),
        ('{"kfac": 3}', r"expected \{optimizer: \{hyper-parameter: value\}\}"),
        ("[1, 2]", r"expected \{optimizer"),
        ('{"kfac": {"nope": 1}}', r"s.json: kfac has no hyper-parameter 'nope'"),
        ('{"kfac": {"lr": "fast"}}', r"s.json: kfac.lr: expected a number"),
        ('{"kfac": {"lr": 1,}}', r"s.json: not valid JSON"),
    ],
)
def test_a_bad_document_is_refused_naming_the_file(tmp_path, text, message):
    (tmp_path / "s.json").write_text(text)
    with pytest.raises(ValueError, match=rf"--settings .*{message}"):
        read_settings_file(tmp_path / "s.json")


# ---- what is refused ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["s.yaml", "s.yml", "s.txt", "settings"])
def test_a_suffix_other_than_json_or_toml_is_refused_naming_both(tmp_path, name):
    (tmp_path / name).write_text(json.dumps(VALID))
    with pytest.raises(ValueError, match=r"unknown suffix .*; expected a settings file named \*\.json or \*\.toml"):
        read_settings_file(tmp_path / name)


def test_a_toml_file_is_not_misnamed_json_in_its_error(tmp_path):
    (tmp_path / "s.TOML").write_text("[kfac\nlr = ")
    with pytest.raises(ValueError, match=r"s.TOML: not valid TOML"):
        read_settings_file(tmp_path / "s.TOML")


def test_a_fifo_is_not_a_regular_file_and_is_never_opened(tmp_path):
    fifo = tmp_path / "s.json"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer for ever
    with pytest.raises(ValueError, match=r"s.json: is not a regular file \(a FIFO, socket or device\)"):
        read_settings_file(fifo)


def test_a_device_is_not_a_regular_file(tmp_path):
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")  # endless
    with pytest.raises(ValueError, match=r"zero.json: is not a regular file"):
        read_settings_file(link)


def test_missing_folder_empty_and_huge_paths(tmp_path):
    with pytest.raises(ValueError, match=r"nope.json: does not exist"):
        read_settings_file(tmp_path / "nope.json")
    (tmp_path / "d.json").mkdir()
    with pytest.raises(ValueError, match=r"d.json: is a folder"):
        read_settings_file(tmp_path / "d.json")
    with pytest.raises(ValueError, match=r"--settings: the empty path"):
        read_settings_file("")
    with open(tmp_path / "big.json", "wb") as f:
        f.truncate(MAX_BYTES + 1)
    with pytest.raises(ValueError, match=r"big.json: 1,048,577 bytes, expected a settings file of at most"):
        read_settings_file(tmp_path / "big.json")


def test_a_duplicate_json_key_is_refused_naming_the_key(tmp_path):
    (tmp_path / "s.json").write_text('{"kfac": {"lr": 0.1, "lr": 0.3}}')
    with pytest.raises(ValueError, match=r"s.json: not valid JSON: duplicate key 'lr'"):
        read_settings_file(tmp_path / "s.json")
    (tmp_path / "t.json").write_text('{"kfac": {"lr": 0.1}, "kfac": {"T_inv": 2}}')
    with pytest.raises(ValueError, match=r"duplicate key 'kfac'"):
        read_settings_file(tmp_path / "t.json")


@pytest.mark.parametrize("suffix, text", [(".json", "[" * 100_000 + "]" * 100_000), (".toml", "a = " + "[" * 100_000)])
def test_over_deep_nesting_is_reported_with_the_files_name(tmp_path, suffix, text):
    path = tmp_path / f"deep{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"--settings .*deep{suffix}: nested too deeply to read") as err:
        read_settings_file(path)
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_without_a_value_parser_values_come_as_the_file_typed_them(tmp_path):
    (tmp_path / "s.json").write_text('{"kfac": {"lr": "0.5", "anything": [1]}}')
    assert _read(tmp_path / "s.json") == {"kfac": {"lr": "0.5", "anything": [1]}}
    (tmp_path / "t.json").write_text('{"adamw": {}}')
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamw'"):
        _read(tmp_path / "t.json")


def test_text_that_is_not_utf8_is_refused(tmp_path):
    (tmp_path / "s.json").write_bytes(b'{"kfac": {"lr": 0.1}}\xff')
    with pytest.raises(ValueError, match=r"s.json: not UTF-8 text"):
        read_settings_file(tmp_path / "s.json")
