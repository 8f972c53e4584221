"""What the operator configures for a server: folders, binding, credentials and limits.

One frozen object built once (from the command line, with `ANIMDIFF_API_KEY` from the
environment) and handed to every part, so tests build their own instead of patching globals.
The limits are checked at submit, before a job is stored, so a request a server will not run is a
4xx at once rather than a failed job minutes later.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from animdiff.errors import ParamsError
from animdiff.run_flags import RUN_FIELDS

API_KEY_ENV = "ANIMDIFF_API_KEY"
MIB = 1024 * 1024
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServerSettings(BaseModel):
    """Every server option; defaults are the safe ones (loopback, no CORS, bounded sizes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models_dir: Path = Field(description="models folder laid out like A1111's")
    data_dir: Path = Field(Path("animdiff-data"), description="queue database, uploads and results")
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 with --listen")
    port: int = Field(7860, ge=0, le=65535)
    api_keys: tuple[str, ...] = Field((), description="accepted API keys (X-API-Key or Bearer)")
    api_auth: tuple[tuple[str, str], ...] = Field((), description="HTTP basic user/password pairs")
    cors_origins: tuple[str, ...] = Field((), description="origins allowed by CORS; none = CORS off")
    devices: tuple[str | None, ...] = Field((None,), description="one worker per device; None = auto")
    input_dirs: tuple[Path, ...] = Field((), description="server folders requests may name as inputs")
    # How every worker runs its jobs: RunOptions' fields, under their names there (`run_options`).
    windows_per_call: int = Field(1, ge=1, description="context windows per UNet call")
    film_model: Path | None = None
    offload: bool = Field(False, description="models in CPU memory, each on the device for its phase")
    fp8: bool = Field(False, description="UNet and motion module Linear/Conv weights stored as float8")
    vae_chunk: int | None = Field(None, ge=1, description="frames per VAE call; None: by size")
    vae_tiling: bool = Field(False, description="decode each frame in 512-pixel tiles")
    max_frames: int = Field(256, ge=1, description="most frames a job may generate")
    max_size: int = Field(1024, ge=64, description="largest width or height")
    max_steps: int = Field(100, ge=1, description="most sampling steps")
    max_queue: int = Field(1000, ge=1, description="most queued jobs; more are refused with 429")
    max_upload_bytes: int = Field(200 * MIB, ge=1, description="largest upload request")
    max_request_bytes: int = Field(50 * MIB, ge=1, description="largest other request body")
    retention_age_s: float | None = Field(None, gt=0, description="delete results older than this")
    retention_bytes: int | None = Field(None, ge=0, description="keep results under this total size")
    requeue_interrupted: bool = Field(False, description="requeue jobs a crash interrupted")
    sync_timeout_s: float | None = Field(None, gt=0, description="A1111 calls give up waiting after this")
    progress_interval_s: float = Field(0.1, ge=0, description="least time between stored window events")
    previews: bool = Field(False, description="make live previews from the latents (costs a little time)")
    preview_interval_s: float = Field(1.0, ge=0, description="least time between previews of a job")
    db: str | None = Field(
        None, description="postgresql://... for a queue several servers share; default SQLite in the data dir"
    )
    workers: str | None = Field(None, description="'auto' (a local Ray cluster) or ray://HOST:PORT")
    ray_actors: int | None = Field(None, ge=1, description="Ray workers; default one per GPU (1 without)")
    ray_cpus_per_actor: float = Field(1.0, gt=0, description="CPUs a Ray worker holds when it has no GPU")
    requeue_limit: int = Field(1, ge=0, description="requeues of a job whose worker died mid-job")
    heartbeat_s: float = Field(10.0, gt=0, description="how often a server marks its running jobs alive")
    stale_after_s: float = Field(60.0, gt=0, description="a shared queue recovers jobs silent this long")

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: str | None) -> str | None:
        if value is not None and value != "auto" and not value.startswith("ray://"):
            raise ValueError("expected 'auto' or ray://HOST:PORT")
        return value

    @field_validator("models_dir", "data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(value).expanduser()

    def run_options(self, device: str | None):  # -> RunOptions (imported lazily: torch)
        """How every worker of this server runs its jobs, on `device`."""
        from animdiff.pipeline import RunOptions

        return RunOptions(device=device, **{name: getattr(self, name) for name in RUN_FIELDS})

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.api_auth)

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    # --- folders under the data dir ------------------------------------------------------------------
    @property
    def database(self) -> Path:
        return self.data_dir / "queue.sqlite3"

    @property
    def store_target(self) -> str | Path:
        """What `open_store` opens: the --db URL, or the SQLite file in the data dir."""
        return self.db or self.database

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def input_roots(self) -> tuple[Path, ...]:
        """Folders a request may name files in: the uploads, then the operator's input folders."""
        return (self.uploads_dir, *self.input_dirs)


def parse_api_auth(text: str | None) -> tuple[tuple[str, str], ...]:
    """A1111's `--api-auth "user:pass,user2:pass2"` form."""
    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise ParamsError(f"--api-auth {item.strip()!r}: expected user:password")
        pairs.append((user, password))
    return tuple(pairs)


def api_keys_from(given: str | None) -> tuple[str, ...]:
    """`--api-key` wins over the environment; several keys are comma-separated."""
    text = given if given else os.environ.get(API_KEY_ENV, "")
    return tuple(key.strip() for key in text.split(",") if key.strip())
