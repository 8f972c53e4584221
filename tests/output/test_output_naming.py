"""File names: A1111's sequence numbers, request ids, and reservations that never collide."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import pytest
from output_helpers import gradient_frames
from PIL import Image

from animdiff.errors import ParamsError
from animdiff.output import OutputOptions, naming, write_animation
from animdiff.output.naming import (
    date_folder,
    next_sequence,
    reserve,
    sanitize_request_id,
    sequence_of,
)

NOW = datetime(2024, 5, 17, 23, 59, 59)


@pytest.mark.parametrize(
    ("name", "seq"),
    [
        ("00007-42.gif", 7),
        ("00012-5", 12),  # a PNG frames folder
        ("00003-1-req.webm", 3),
        ("00009.reserved", 9),
        ("123.txt", 123),
        ("foo.gif", None),
        ("abc-1.png", None),
        ("-5.gif", None),
        (".00004-1.gif.1a2b.part", None),
        ("notes", None),
    ],
)
def test_sequence_of(name: str, seq: int | None) -> None:
    assert sequence_of(name) == seq


def test_next_sequence(tmp_path: Path) -> None:
    assert next_sequence(tmp_path / "missing") == 0
    assert next_sequence(tmp_path) == 0
    for name in ("foo.gif", "abc-1.png", "-5.gif", ".hidden"):
        (tmp_path / name).write_text("junk")
    assert next_sequence(tmp_path) == 0
    (tmp_path / "00003-42.gif").write_text("")
    assert next_sequence(tmp_path) == 4
    (tmp_path / "00011-42").mkdir()  # PNG folders count too
    assert next_sequence(tmp_path) == 12


def test_date_folder_uses_the_given_local_date(tmp_path: Path) -> None:
    assert date_folder(tmp_path, NOW) == tmp_path / "AnimateDiff" / "2024-05-17"


def test_date_folder_defaults_to_today(tmp_path: Path) -> None:
    before = datetime.now().strftime("%Y-%m-%d")
    name = date_folder(tmp_path).name
    after = datetime.now().strftime("%Y-%m-%d")
    assert name in {before, after}  # the clock may pass midnight in between


@pytest.mark.parametrize("good", ["", "abc", "A-b_9", "x" * 64])
def test_request_id_accepted(good: str) -> None:
    assert sanitize_request_id(good) == good


@pytest.mark.parametrize("bad", ["a b", "../x", "a/b", "é", "a.b", "a:b", "x" * 65, "tab\t"])
def test_request_id_rejected(bad: str) -> None:
    with pytest.raises(ParamsError, match="request_id"):
        sanitize_request_id(bad)


def test_names_continue_after_existing_entries(tmp_path: Path, frames: list[Image.Image]) -> None:
    folder = date_folder(tmp_path, NOW)
    folder.mkdir(parents=True)
    (folder / "00009-1").mkdir()
    (folder / "junk-file.gif").write_text("")
    first = write_animation(frames, ["txt"], tmp_path, 42, "x", OutputOptions(), now=NOW)
    second = write_animation(frames, ["txt"], tmp_path, 43, "x", OutputOptions(), "req-1", now=NOW)
    assert first.files["txt"] == folder / "00010-42.txt"
    assert second.files["txt"] == folder / "00011-43-req-1.txt"
    assert second.base == folder / "00011-43-req-1"


def test_bad_request_id_writes_nothing(tmp_path: Path, frames: list[Image.Image]) -> None:
    with pytest.raises(ParamsError):
        write_animation(frames, ["txt"], tmp_path, 1, "x", OutputOptions(), "../../etc", now=NOW)
    assert not tmp_path.joinpath("AnimateDiff").exists()


def test_negative_seed_is_refused(tmp_path: Path, frames: list[Image.Image]) -> None:
    with pytest.raises(ParamsError, match="seed"):
        write_animation(frames, ["txt"], tmp_path, -1, "x", OutputOptions(), now=NOW)


def test_reserve_skips_held_numbers(tmp_path: Path) -> None:
    (tmp_path / "00000.reserved").write_text("")  # another job holds 0
    held = reserve(tmp_path, 5)
    assert (held.seq, held.base) == (1, "00001-5")
    assert held.lock.exists()
    held.release()
    assert not held.lock.exists()


def test_reserve_rechecks_after_claiming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that does not reserve (A1111 itself) may take a number between listing and claiming."""
    (tmp_path / "00000-7.gif").write_text("")
    real = naming.next_sequence
    calls: list[int] = []

    def first_listing_is_stale(folder: Path) -> int:
        calls.append(0)
        return 0 if len(calls) == 1 else real(folder)

    monkeypatch.setattr(naming, "next_sequence", first_listing_is_stale)
    held = reserve(tmp_path, 8)
    assert held.seq == 1
    assert len(calls) == 2  # the stale number was claimed, found taken, and given up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000-7.gif", "00001.reserved"]


def test_racing_jobs_never_share_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every job lists the folder before any has claimed a number, so all start from 0."""
    jobs = 16
    tiny = gradient_frames(2, 16, 16)
    # Timeouts everywhere: an implementation that serialised the listing would otherwise hang here.
    barrier = threading.Barrier(jobs, timeout=60)
    local = threading.local()
    first_listings: list[int] = []
    real = naming.next_sequence

    def synchronised_listing(folder: Path) -> int:
        seq = real(folder)
        if not getattr(local, "listed", False):
            local.listed = True
            first_listings.append(seq)
            barrier.wait()
        return seq

    monkeypatch.setattr(naming, "next_sequence", synchronised_listing)
    results: list[Path] = []
    errors: list[BaseException] = []

    def job(seed: int) -> None:
        try:
            result = write_animation(
                tiny, ["gif", "txt"], tmp_path, seed, f"job {seed}", OutputOptions(), now=NOW
            )
            results.append(result.files["txt"])
        except BaseException as exc:
            errors.append(exc)

    date_folder(tmp_path, NOW).mkdir(parents=True)
    threads = [threading.Thread(target=job, args=(seed,), daemon=True) for seed in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "jobs still running after 120 s"
    assert errors == []
    assert first_listings == [0] * jobs
    assert sorted(sequence_of(p.name) for p in results) == list(range(jobs))
    for path in results:  # each file holds its own job's text: nothing was overwritten
        assert path.read_text() == f"job {path.stem.split('-')[1]}\n"
    folder = date_folder(tmp_path, NOW)
    assert len(list(folder.iterdir())) == 2 * jobs  # no reservations or temporaries left
