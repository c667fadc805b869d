"""Where the data folder is (issue #10, 8): never relative to the current folder.

A relative SINAL_DATA_DIR is resolved against the project folder: the folder of the .env
in use, else the checkout `sinal` runs from; with neither, the data folder is the user's
data directory (README, "Data folder")."""

from __future__ import annotations

from pathlib import Path

import pytest

from sinal.node import config as config_module
from sinal.node.config import checkout_root, find_env_file, load_config

REPOSITORY = Path(__file__).resolve().parent.parent


def test_the_checkout_is_found_from_the_installed_package() -> None:
    assert checkout_root() == REPOSITORY


def test_relative_data_dir_follows_the_env_file_not_the_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / ".env").write_text("SINAL_DATA_DIR=state/sinal\n")
    monkeypatch.chdir(elsewhere)
    config = load_config({}, env_file=project / ".env")
    assert config.data_dir == project / "state" / "sinal"
    monkeypatch.chdir(project)  # ./.env, found from the project itself: the same folder
    assert load_config({}, env_file=Path(".env")).data_dir == project / "state" / "sinal"
    (project / ".env").write_text("HTTP_PORT=4000\n")  # the default, `.sinal`
    assert load_config({}, env_file=project / ".env").data_dir == project / ".sinal"


def test_without_env_file_the_checkout_is_the_project(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config({}, env_file=None).data_dir == REPOSITORY / ".sinal"
    assert load_config({"SINAL_DATA_DIR": "var"}, env_file=None).data_dir == REPOSITORY / "var"


def test_an_absolute_data_dir_is_used_as_is(tmp_path: Path) -> None:
    assert load_config({"SINAL_DATA_DIR": str(tmp_path / "abs")}, env_file=None).data_dir \
        == tmp_path / "abs"
    home = load_config({"SINAL_DATA_DIR": "~/sinal-data"}, env_file=None).data_dir
    assert home == Path("~/sinal-data").expanduser().resolve()


def test_without_a_project_the_users_data_directory(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel install (no checkout) and no .env: $XDG_DATA_HOME/sinal."""
    monkeypatch.setattr(config_module, "checkout_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    xdg = tmp_path / "xdg"
    config = load_config({"XDG_DATA_HOME": str(xdg)}, env_file=None)
    assert config.data_dir == xdg / "sinal"
    named = load_config({"XDG_DATA_HOME": str(xdg), "SINAL_DATA_DIR": "node-a"}, env_file=None)
    assert named.data_dir == xdg / "sinal" / "node-a"
    without_xdg = load_config({}, env_file=None)
    assert without_xdg.data_dir == Path("~/.local/share/sinal").expanduser().resolve()


def test_the_env_file_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout, here = tmp_path / "checkout", tmp_path / "here"
    checkout.mkdir()
    here.mkdir()
    monkeypatch.setattr(config_module, "checkout_root", lambda: checkout)
    assert find_env_file(here) is None
    (checkout / ".env").write_text("HTTP_PORT=4000\n")
    assert find_env_file(here) == checkout / ".env"  # run from elsewhere: the checkout's
    (here / ".env").write_text("HTTP_PORT=5000\n")
    assert find_env_file(here) == here / ".env"  # ./.env first
