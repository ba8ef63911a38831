"""Atomic writers: never a half-written file, and modes that follow the umask like open() does."""

import os
import stat

import pytest

from llm4rec.io import atomic_dir, write_json_atomic, write_text_atomic


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_atomic_files_follow_the_umask(tmp_path, umask):
    write_text_atomic(tmp_path / "a.txt", "x")
    write_json_atomic(tmp_path / "b.json", {"a": 1})
    with open(tmp_path / "ref.txt", "w") as f:
        f.write("x")
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "ref.txt") == 0o666 & ~umask
    assert _mode(tmp_path / "b.json") == 0o666 & ~umask


def test_atomic_dir_fixes_private_files_written_inside(tmp_path, umask):
    import tempfile

    with atomic_dir(tmp_path / "out") as tmp:
        # what mkstemp-based writers (safetensors, tempfile) leave: 0600
        fd, name = tempfile.mkstemp(dir=tmp)
        os.close(fd)
        os.rename(name, tmp / "weights.bin")
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "f.txt").write_text("x")
    assert _mode(tmp_path / "out") == 0o777 & ~umask
    assert _mode(tmp_path / "out" / "sub") == 0o777 & ~umask
    assert _mode(tmp_path / "out" / "weights.bin") == 0o666 & ~umask
    assert _mode(tmp_path / "out" / "sub" / "f.txt") == 0o666 & ~umask


def test_failed_block_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "x").write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
