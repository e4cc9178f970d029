"""The provenance half of `Run`: registering checkpoints and linking runs by weights or tokens."""

from __future__ import annotations

import os
import time
import uuid as uuid_module
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _spool, provenance
from ._checks import check_step
from ._status import RunStatus
from ._warn import warn_once
from .errors import ConfigurationError, DatabaseError, DatabaseUnavailableError, NotFoundError
from .provenance import InferredLink, TensorFingerprint
from .writer import MetricWriter, Operation

if TYPE_CHECKING:
    from ._backends import Backend
    from ._host import RunHost

__all__ = ["RunProvenance"]

_TOKEN_LINK_KINDS = ("resumed_from", "finetuned_from")


class RunProvenance:
    """Mixed into `Run`; uses its writer, status and tracker."""

    uuid: uuid_module.UUID
    _status: RunStatus
    _writer: MetricWriter
    _tracker: RunHost

    if TYPE_CHECKING:  # what Run defines

        @property
        def id(self) -> int | None: ...

        def _write(self, fn: Callable[[Backend, int], None]) -> None: ...

        def link(
            self, kind: str, other: Any, evidence: Mapping[str, Any] | None = None
        ) -> None: ...

    def register_checkpoint(
        self,
        path: str | os.PathLike[str] | None,
        state_dict: Mapping[str, Any] | None,
        step: int | None,
        *,
        kind: str = "checkpoint",
        sample_above: int | None = None,
    ) -> dict[str, Any]:
        """Register a checkpoint of this run; return the token to embed in it.

        The tensors of `state_dict` are fingerprinted here, on the caller's thread, and written
        in the background after the metrics logged before: this never waits for the database.
        `kind` is 'checkpoint' or 'final'; `sample_above` must match the other runs' (see
        `provenance.fingerprint_state_dict`).

        Example::

            token = run.register_checkpoint("ckpt.pt", model.state_dict(), step=100)
            torch.save({"model": model.state_dict(), "sqltrack": token}, "ckpt.pt")

        A run that has finished can still register (weights saved after training): then the
        write is made before this returns.

        Raises:
            ConfigurationError: a bad `kind`, `path` or `state_dict`.
        """
        provenance.check_kind(kind)
        checked_step = None if step is None else check_step(step)
        text_path = None if path is None else os.fspath(path)
        if text_path is not None and not isinstance(text_path, str):
            raise ConfigurationError(f"checkpoint path {path!r} must be a str or os.PathLike[str]")
        fingerprints = (
            []
            if state_dict is None
            else provenance.fingerprint_state_dict(state_dict, sample_above=sample_above)
        )
        token = provenance.checkpoint_token(self.uuid, uuid_module.uuid4(), checked_step)
        self.register_fingerprints(token, text_path, kind, fingerprints)
        return token

    def checkpoint_removed(self, path: str | os.PathLike[str]) -> None:
        """Record that the checkpoint file (or folder) at `path`, registered by this run, was
        deleted: Lightning's ``save_top_k`` and Hugging Face's ``save_total_limit`` rotate old
        ones away. Its rows in ``checkpoints`` get ``removed_at``; they and their fingerprints
        stay, so the links made through them stay explained. Paths compare as registered.

        Raises:
            ConfigurationError: `path` is not a str or os.PathLike[str].
        """
        text_path = path if isinstance(path, str) else getattr(path, "__fspath__", lambda: None)()
        if not isinstance(text_path, str):
            raise ConfigurationError(f"checkpoint path {path!r} must be a str or os.PathLike[str]")
        removed_at = time.time()

        def write(b: Backend, run_id: int) -> None:
            b.execute(
                b.sql(
                    "UPDATE checkpoints SET removed_at = ? "
                    "WHERE run_id = ? AND path = ? AND removed_at IS NULL"
                ),
                (b.timestamp(removed_at), run_id, text_path),
            )
            if _spool.is_spool(b):  # its row may be in the database only
                _spool.defer_removal(b, str(self.uuid), text_path, removed_at)

        self._in_order(write)

    def register_fingerprints(
        self,
        token: Mapping[str, Any],
        path: str | None,
        kind: str,
        fingerprints: Sequence[TensorFingerprint],
    ) -> None:
        """Register a checkpoint fingerprinted already (`provenance.fingerprint_state_dict`)
        under `token` (one `provenance.checkpoint_token` made, maybe embedded in a file saved
        before): what `register_checkpoint` does once it has fingerprinted, for integrations
        that fingerprint on the training thread and write the token themselves."""
        stored = dict(token)

        def write(b: Backend, run_id: int) -> None:
            try:
                provenance.write_checkpoint(
                    b, run_id=run_id, token=stored, path=path, kind=kind, fingerprints=fingerprints
                )
            except DatabaseError as exc:
                if not b.is_disconnect(exc):  # a disconnect is retried by the writer
                    warn_once(
                        f"run:{self.uuid}",
                        "checkpoint",
                        f"sqltrack: could not register checkpoint {path!r} of run {self.id}: {exc}",
                    )
                raise

        self._in_order(write)

    def _in_order(self, write: Callable[[Backend, int], None]) -> None:
        """Make `write` after what was logged before: queued while the run runs (never
        waiting), made before this returns once it has finished (weights saved after it)."""
        if self._status is RunStatus.RUNNING:
            self._writer.submit(Operation(write))
        else:
            self._write(write)

    def link_from_weights(
        self,
        state_dict: Mapping[str, Any],
        *,
        sample_above: int | None = None,
        resumed: bool = False,
        infer: bool = True,
        token: Mapping[str, Any] | None = None,
    ) -> list[InferredLink]:
        """Record `state_dict` as this run's initial weights and link the runs they came from.

        Call it once the model holds the weights it starts from. Each fingerprinted tensor is
        credited to the earliest other run that produced (changed) it, exactly or through a cast
        to another floating dtype (see `provenance.infer_links`); a run credited with at least
        half of the elements becomes ``finetuned_from`` (``resumed_from`` if `resumed`: the
        optimizer and loop state were restored too), any other ``initialized_from``, with the
        fraction in the link's evidence. Fresh weights link nothing. With ``infer=False`` the
        weights are only recorded, for a caller that knows the parent from a token. Unlike the
        other writes this waits: it reads the registry.

        `token` is the token of the checkpoint the weights were loaded from, when the caller
        has it (as `register_checkpoint` returned it): the link to its run is then made by
        token, with the checkpoint and step, and with the fingerprints' kind, fraction and casts
        when they credit that run; by token alone (``finetuned_from``) when they credit no run.
        A token is ignored when the fingerprints credit other runs only (the weights changed
        since that load), when its run is not in this database, and when it is this run's own.
        With `resumed` (or ``infer=False``) the token's run is the one parent: a
        ``resumed_from`` (``finetuned_from``) link by token, nothing inferred. While the
        database is away the token is kept with the weights and applied when they arrive.

        Example::

            model.load_state_dict(torch.load("base.pt", weights_only=True)["model"])
            links = run.link_from_weights(model.state_dict())  # [InferredLink('finetuned_from', ...)]

        Raises:
            ConfigurationError: `state_dict` is not a mapping, or `token` is not a token.
            DatabaseError: the registry could not be read.
        """
        fingerprints = provenance.fingerprint_state_dict(state_dict, sample_above=sample_above)
        return self.link_from_fingerprints(fingerprints, resumed=resumed, infer=infer, token=token)

    def link_from_fingerprints(
        self,
        fingerprints: Sequence[TensorFingerprint],
        *,
        resumed: bool,
        infer: bool = True,
        token: Mapping[str, Any] | None = None,
    ) -> list[InferredLink]:
        """`link_from_weights` for weights fingerprinted already (on the training thread)."""
        loaded = None if token is None else _parse_token(token)
        if loaded is not None and loaded["run_uuid"] == str(self.uuid):
            loaded = None  # weights this run saved itself: nothing to link
        initial: dict[str, Any] = provenance.checkpoint_token(self.uuid, uuid_module.uuid4(), None)
        if loaded is not None:
            initial["loaded_from"] = loaded  # kept for an inference made later (see below)
        self._write(
            lambda b, run_id: provenance.write_checkpoint(
                b,
                run_id=run_id,
                token=initial,
                path=None,
                kind="initial",
                fingerprints=fingerprints,
            )
        )
        if loaded is not None and (resumed or not infer):
            # a resume goes on from that checkpoint: its run is the one parent
            kind = "resumed_from" if resumed else "finetuned_from"
            try:
                return [self.link_from_token(loaded, kind=kind)]
            except NotFoundError:
                loaded = None  # a run of another database: as if there were no token
        if not infer:
            return []
        tracker = self._tracker
        try:
            if self.id is None or self._writer.offline:
                raise DatabaseUnavailableError(f"run {self.uuid} has not reached its database")
            with tracker._lock:
                links = provenance.infer_links(tracker.backend, self.id, fingerprints)
                if loaded is not None:
                    links = provenance.with_token(tracker.backend, links, loaded)
        except DatabaseUnavailableError:
            # The registry is in the database: match once it answers, after these weights
            # are written (in order, by the writer, or by `sqltrack sync` from the spool,
            # which finds the token in the initial checkpoint's row).
            def deferred(b: Backend, run_id: int) -> None:
                if _spool.is_spool(b):
                    _spool.defer_inference(b, str(self.uuid), initial["checkpoint_uuid"], resumed)
                else:
                    provenance.infer_and_link(
                        b, run_id, fingerprints, resumed=resumed, token=loaded
                    )

            self._write(deferred)
            return []
        links = provenance.resumed_kind(links, resumed)
        for link in links:
            self.link(link.kind, link.run_uuid, link.evidence)
        return links

    def link_from_token(
        self,
        token: Mapping[str, Any],
        *,
        kind: str = "resumed_from",
        path: str | os.PathLike[str] | None = None,
    ) -> InferredLink:
        """Link the run that wrote the checkpoint `token` (as `register_checkpoint` returned it).

        `kind` is 'resumed_from' (optimizer and loop state restored) or 'finetuned_from'.

        Raises:
            ConfigurationError: `token` is not a checkpoint token, or a bad `kind`.
            NotFoundError: the token's run is not in this database.
        """
        parsed = _parse_token(token)
        if kind not in _TOKEN_LINK_KINDS:
            raise ConfigurationError(
                f"link kind {kind!r} is not one of {', '.join(map(repr, _TOKEN_LINK_KINDS))}"
            )
        try:
            to_id: int | None = self._tracker.run_id(parsed["run_uuid"])
        except DatabaseUnavailableError:
            to_id = None  # linked by UUID when the database answers
        evidence = provenance.token_evidence(parsed, path)
        self.link(kind, parsed["run_uuid"], evidence)
        return provenance.InferredLink(kind, to_id, parsed["run_uuid"], evidence)


def _parse_token(token: Mapping[str, Any]) -> dict[str, Any]:
    parsed = provenance.read_token(token)
    if parsed is None:
        raise ConfigurationError(
            f"token {token!r:.120} is not a sqltrack checkpoint token; expected "
            "{'run_uuid': ..., 'checkpoint_uuid': ..., 'step': ...} from register_checkpoint()"
        )
    return parsed
