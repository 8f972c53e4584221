"""Reading a weight file says what happened, names the file, and keeps the cause chained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from animdiff.errors import ModelFileError
from animdiff.models.files import read_state_dict


def test_truncated_checkpoint_is_damaged_with_its_cause(tmp_path: Path) -> None:
    path = tmp_path / "cut.ckpt"
    torch.save({"a": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ModelFileError, match=r"cut\.ckpt: damaged file") as caught:
        read_state_dict(path)
    assert caught.value.__cause__ is not None


def test_out_of_memory_is_not_called_damage(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.ckpt"
    torch.save({"a": torch.ones(4)}, path)

    def no_memory(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(torch, "load", no_memory)
    with pytest.raises(ModelFileError, match=r"big\.ckpt: not enough memory") as caught:
        read_state_dict(path)
    assert isinstance(caught.value.__cause__, MemoryError)


def test_permission_is_not_called_damage(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "locked.safetensors"
    path.write_bytes(b"12345678")
    real_open = open

    def refuse(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(ModelFileError, match=r"locked\.safetensors: permission denied"):
        read_state_dict(path)


def test_unsafe_pickle_is_refused_without_advice_to_disable_safety(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"a": torch.ones(1), "b": Path("x")}, path)
    with pytest.raises(ModelFileError, match=r"evil\.ckpt: refused to load") as caught:
        read_state_dict(path)
    assert "weights_only" not in str(caught.value) and "False" not in str(caught.value)
    assert caught.value.__cause__ is not None


def test_a_list_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.ones(1)], path)
    with pytest.raises(ModelFileError, match=r"list\.pt: holds a list, not a state dict"):
        read_state_dict(path)


def test_conversion_errors_name_the_file(tmp_path: Path) -> None:
    from animdiff.models.load import load_checkpoint
    from animdiff.testing.factory import sd_checkpoint_state, tiny_sd, write_checkpoint

    state = {
        k: v for k, v in sd_checkpoint_state(tiny_sd()).items() if not k.startswith("first_stage_model.")
    }
    path = write_checkpoint(tmp_path / "novae.safetensors", state)
    with pytest.raises(ModelFileError, match=r"novae\.safetensors: .*no VAE"):
        load_checkpoint(path)


def test_the_cli_prints_one_line_for_a_chained_error(tmp_path: Path, capsys) -> None:
    from animdiff.cli import main

    models = tmp_path / "models"
    (models / "AnimateDiff").mkdir(parents=True)
    (models / "AnimateDiff" / "cut.ckpt").write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    assert main(["models", "--models-dir", str(models)]) == 0
    assert capsys.readouterr().out.startswith("AnimateDiff/cut.ckpt\tdamaged:")
