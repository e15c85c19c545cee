"""_utils/redis_config.py reading config files as root (tests run as root, as the minion
does): the values a file sets, and no read through a name the redis account could have
redirected (a symbolic link, a second hard link, a FIFO)."""

import importlib.util
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("redis_config_files_under_test", ROOT / "_utils/redis_config.py")
config = importlib.util.module_from_spec(spec)
spec.loader.exec_module(config)


def test_values_of_a_regular_file(tmp_path):
    path = tmp_path / "redis.conf"
    path.write_text('port 6380\nrequirepass "s3cr\\"et"\n# port 1\nrequirepass second\n')
    assert config.file_values(str(path), {"port", "requirepass"}) == {"port": "6380", "requirepass": "second"}
    text, info = config.read_file(str(path))
    assert text.startswith("port 6380") and info.st_size == len(text)


def test_a_missing_file_gives_nothing(tmp_path):
    assert config.read_file(str(tmp_path / "none.conf")) == (None, None)
    assert config.file_values(str(tmp_path / "none.conf"), {"port"}) == {}


@pytest.mark.parametrize("plant", ["symlink", "hardlink", "fifo"])
def test_a_planted_name_is_never_read(tmp_path, plant):
    secret = tmp_path / "shadow"
    secret.write_text("requirepass from-the-target\n")
    path = tmp_path / "sentinel.conf"
    if plant == "symlink":
        path.symlink_to(secret)
    elif plant == "hardlink":
        os.link(secret, path)
    else:
        os.mkfifo(path)
    with pytest.raises(OSError) as refused:
        config.read_file(str(path))
    assert str(path) in refused.value.strerror and "replace it" in refused.value.strerror
    assert config.file_values(str(path), {"requirepass"}) == {}
