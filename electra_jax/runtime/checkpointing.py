"""Checkpoints of a training run with Orbax: its state, its data position and what made it.

A run that can be killed at any moment and continue as if nothing happened
needs three things saved together: the state (parameters, optimizer moments,
step, base key), the data loader's position, and metadata that says which
model, tokenizer and config produced them. This module is that, for any
training loop (pre-training and fine-tuning alike):

  checkpointer = Checkpointer(directory, every_steps=1000, keep=3)
  restored = checkpointer.restore_latest(abstract_state, check=refuse_other_runs)
  if restored:  # else start from scratch
    state, step = restored.state, restored.step
    loader.set_state(restored.loader_state)
  with stop_signals.StopSignals() as stop:
    for step in ...:
      state = train_step(state, next(loader))
      if checkpointer.should_save(step) or stop.reached(step):
        checkpointer.save(step, state, loader.get_state(), metadata)
  checkpointer.close()  # waits for the last save

What it guarantees:
- Saves are asynchronous (by default): `save` copies the state off the devices
  and returns; the files are written in the background while training goes on.
- Each checkpoint appears complete or not at all: Orbax writes it into a
  temporary directory and renames it when done. A run killed mid-save leaves
  only that temporary directory, which the next Checkpointer on the directory
  reports and removes.
- The newest `keep` checkpoints are kept, and those whose step is a multiple
  of `keep_every`, for good; older ones are deleted once a newer one is complete.
- `restore_latest` reads the newest checkpoint that can be read and whose
  state matches the checksums written with it (state_checksums.py): restores
  are checked, not trusted. One that cannot (truncated, zeroed, missing or
  altered files) is set aside as `<step>.unreadable` with one warning line,
  and the one before it is used; none is set aside unless an older one
  restores, so a mismatch that fails them all moves nothing. Damage to files
  that the state is read without (Orbax's bookkeeping) costs nothing when the
  state still matches its checksums: that checkpoint is used, with one
  warning line. docs/checkpoint_faults.md has the table of faults tested.
- The state is read into `abstract_state`: a pytree of jax.ShapeDtypeStruct
  carrying the shardings wanted now, so a checkpoint saved on one mesh restores
  onto another (8 devices -> 1, 1 -> 8, other hosts).
- `metadata` (a JSON-able dict) is saved with every checkpoint and given to
  `check` before the state is read; `check_compatible` is the usual check:
  some fields must be equal, some may differ, the rest only when allowed.
- `check_space` refuses, before training, a directory that cannot be written
  or cannot hold one more checkpoint.
- On several hosts every process calls every Checkpointer method (each writes
  and reads its own shards; process 0 writes the JSON items and renames).
"""

import contextlib
import dataclasses
import logging as python_logging
import os
import re
import shutil
import sys
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from electra_jax.errors import ConfigError, UserError
from electra_jax.runtime import fileio, state_checksums

_ITEMS = ("state", "loader", "metadata")
UNREADABLE_SUFFIX = ".unreadable"  # a name Orbax does not take for a step
CHECKSUMS_KEY = "state_checksums"  # in the metadata item; never shown to `check`
# What reading a damaged checkpoint raises: missing or short files, undecodable
# JSON, an item that is not there; Orbax wraps tensorstore's errors in a bare
# Exception. Anything short of an interruption means "this one cannot be read".
_READ_ERRORS = (Exception,)


class _QuietOrbax(python_logging.Filter):
  """Drops Orbax's INFO lines (a dozen per save), and at default verbosity the tracebacks its
  background threads log when a save fails: the save's failure reaches the run as an
  exception, which ends it in one line (`_reporting_failed_saves`). While a checkpoint is
  being read, Orbax's warnings and errors (about the damaged files of one) are kept for our
  own one line."""

  def __init__(self):
    super().__init__()
    self.held: list[str] | None = None

  def filter(self, record: python_logging.LogRecord) -> bool:
    if f"{os.sep}orbax{os.sep}" not in record.pathname:
      return True
    if self.held is not None:
      if record.levelno >= python_logging.WARNING:  # not its INFO lines, which name files too
        self.held.append(record.getMessage())
      return False
    if record.exc_info and logging.get_verbosity() < logging.DEBUG:
      return False
    return record.levelno >= python_logging.WARNING

  @contextlib.contextmanager
  def holding(self) -> Iterator[list[str]]:
    self.held = []
    try:
      yield self.held
    finally:
      self.held = None


_QUIET_ORBAX = _QuietOrbax()
python_logging.getLogger("absl").addFilter(_QUIET_ORBAX)


def _drop_failed_read_leftovers(unraisable, previous=sys.unraisablehook) -> None:
  """A failed read of a damaged checkpoint leaves work behind: tensorstore callbacks that find
  Orbax's event loop closed, and Orbax's reads of other arrays that fail the same way. Their
  errors are no news (restore_latest already reported the checkpoint), not tracebacks for the
  console."""
  code = getattr(unraisable.object, "cr_code", None)
  leftover = ((isinstance(unraisable.exc_value, RuntimeError) and
               str(unraisable.exc_value) == "Event loop is closed") or
              (code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename))
  if not leftover:
    previous(unraisable)


sys.unraisablehook = _drop_failed_read_leftovers


class _QuietFailedReads(python_logging.Filter):
  """The same leftovers as asyncio reports them: the failed futures of tensorstore's reads."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ("exception was never retrieved" in message and "tensorstore" in message.lower())


python_logging.getLogger("asyncio").addFilter(_QuietFailedReads())


@dataclasses.dataclass(frozen=True)
class Restored:
  """A checkpoint read back: its step and the three things saved with it."""

  step: int
  state: Any  # laid out as the abstract state asked
  loader_state: dict
  metadata: dict


class Checkpointer:
  """Saves every `every_steps` steps into `directory`; restores the newest readable checkpoint."""

  def __init__(self, directory: str, every_steps: int, keep: int, keep_every: int = 0,
               asynchronous: bool = True):
    self.directory = fileio.absolute(directory)
    self.every_steps = every_steps
    if jax.process_index() == 0 and fileio.is_dir(self.directory):
      for name in ocp.step.tmp_checkpoints(self.directory):
        logging.warning("%s was being written when its run stopped and is incomplete: "
                        "removing it", os.path.join(self.directory, name))
        fileio.remove_tree(os.path.join(self.directory, name))
    preserve = [checkpoint_managers.LatestN(keep)]
    if keep_every:
      preserve.append(checkpoint_managers.EveryNSteps(keep_every))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(preserve),
        enable_async_checkpointing=asynchronous,
        create=False)  # the directory appears with the first save, not before
    # Orbax reads every step's bookkeeping here; what it says of a damaged one is kept
    # for restore_latest's one line.
    with _QUIET_ORBAX.holding() as self._orbax_notes:
      self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    return step % self.every_steps == 0

  def save(self, step: int, state: Any, loader_state: Mapping[str, Any],
           metadata: Mapping[str, Any]) -> None:
    """Starts saving (returns once the state is off the devices when asynchronous)."""
    logging.info("Saving the checkpoint of step %d in %s", step, self.directory)
    metadata = {**metadata, CHECKSUMS_KEY: state_checksums.compute(state)}
    with self._reporting_failed_saves():  # this one, or the asynchronous one before it
      self._manager.save(step, force=True, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), loader=ocp.args.JsonSave(dict(loader_state)),
          metadata=ocp.args.JsonSave(metadata)))

  def restore_latest(self, abstract_state: Any,
                     check: Callable[[int, dict], Any] = lambda step, metadata: None
                     ) -> Restored | None:
    """The newest readable checkpoint read into `abstract_state`'s layout; None if there is none.

    `check(step, metadata)` runs before the state is read and raises to refuse it.
    """
    unreadable = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      with _QUIET_ORBAX.holding() as orbax_messages:
        try:
          metadata = dict(self._read(step, metadata=ocp.args.JsonRestore())["metadata"])
        except _READ_ERRORS as error:
          unreadable.append((step, error))
          continue
        checksums = metadata.pop(CHECKSUMS_KEY, None)
        check(step, metadata)
        try:
          restored = self._read(step, state=ocp.args.StandardRestore(abstract_state),
                                loader=ocp.args.JsonRestore())
          _verify(restored["state"], checksums)
        except _READ_ERRORS as error:
          unreadable.append((step, error))
          continue
      notes = [m for m in self._orbax_notes + orbax_messages
               if os.path.join(self.directory, str(step)) + os.sep in m]
      if notes:
        logging.warning("The checkpoint of step %d has damaged files that its state is read "
                        "without (%s); its state matches its checksums, so it is used", step,
                        _first_line(notes[0]))
      self._set_aside(unreadable, step)
      return Restored(step, restored["state"], restored["loader"], metadata)
    if unreadable:
      step, error = unreadable[0]
      raise UserError(f"no checkpoint in {self.directory} can be read (step {step}: "
                      f"{_first_line(error)}); move that directory away to start afresh")
    return None

  def wait(self) -> None:
    """Blocks until the last save is complete on disk."""
    with self._reporting_failed_saves():
      self._manager.wait_until_finished()

  def close(self) -> None:
    with self._reporting_failed_saves():
      self._manager.close()

  @contextlib.contextmanager
  def _reporting_failed_saves(self) -> Iterator[None]:
    """A save that fails (a full disk, a directory gone read-only) ends the run in one line;
    Orbax leaves the failed save as a temporary directory, which the next run removes."""
    try:
      yield
    except Exception as error:  # pylint: disable=broad-except  # Orbax and tensorstore's kinds
      self._manager.reload()
      newest = max(self._manager.all_steps(), default=None)
      kept = (f"the newest complete checkpoint is step {newest}, which the same command "
              "continues from" if newest is not None else "no checkpoint is complete yet")
      raise UserError(f"saving a checkpoint in {self.directory} failed ({_os_cause(error)}); "
                      f"{kept} once the directory has room and is writable") from None

  def _read(self, step: int, **items: ocp.args.CheckpointArgs) -> ocp.args.Composite:
    return self._manager.restore(step, args=ocp.args.Composite(**items))

  def _set_aside(self, unreadable: list[tuple[int, Exception]], restored_step: int) -> None:
    """Renames checkpoints newer than `restored_step` that could not be read, keeping them."""
    for step, error in unreadable:
      path = os.path.join(self.directory, str(step))
      logging.warning("The checkpoint of step %d cannot be read (%s): using step %d instead, "
                      "and keeping it as %s%s", step, _first_line(error), restored_step, path,
                      UNREADABLE_SUFFIX)
      if jax.process_index() == 0:
        fileio.move(path, _free_name(path + UNREADABLE_SUFFIX))
    if unreadable:
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices("unreadable checkpoints set aside")
      self._manager.reload()


def _verify(state: Any, checksums: dict[str, int] | None) -> None:
  """Raises ValueError where `state` is not what was saved (checkpoints written before
  checksums existed have none, and are taken as read)."""
  if checksums is None:
    return
  wrong = state_checksums.mismatches(state, checksums)
  if wrong:
    raise ValueError(f"the state read back does not match the checksums saved with it "
                     f"({len(wrong)} array(s), first {wrong[0]})")


def restore_step(directory: str, step: int, abstract_state: Any) -> Restored:
  """The checkpoint of `step` in `directory`, read without changing anything there.

  For reading a kept checkpoint (`keep_every`) of a run, finished or still
  going: unlike a Checkpointer, this never removes an incomplete save.
  """
  options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  manager = ocp.CheckpointManager(fileio.absolute(directory), options=options,
                                  item_names=_ITEMS)
  try:
    steps = sorted(manager.all_steps())
    if step not in steps:
      raise UserError(f"{directory} has no checkpoint of step {step}; it has "
                      f"{', '.join(map(str, steps)) or 'none'} (checkpoint.keep_every keeps "
                      "checkpoints for good)")
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), loader=ocp.args.JsonRestore(),
          metadata=ocp.args.JsonRestore()))
      metadata = dict(restored["metadata"])
      _verify(restored["state"], metadata.pop(CHECKSUMS_KEY, None))
    except _READ_ERRORS as error:
      raise UserError(f"the checkpoint of step {step} in {directory} cannot be read: "
                      f"{_first_line(error)}") from None
  finally:
    manager.close()
  return Restored(step, restored["state"], restored["loader"], metadata)


def _free_name(path: str) -> str:
  candidate, n = path, 1
  while fileio.exists(candidate):
    candidate, n = f"{path}.{n}", n + 1
  return candidate


def _os_cause(error: Exception) -> str:
  """The operating system's words for why a write failed, where tensorstore's long message
  ends in them ("...: No space left on device [os_error_code='28']"); else its first line."""
  if isinstance(error, OSError) and error.strerror:
    return f"{error.strerror}, errno {error.errno}"
  found = re.search(r":\s*([^:\[]+?)\s*\[os_error_code='?(\d+)", str(error))
  return f"{found[1]}, errno {found[2]}" if found else _first_line(error)


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


# ---------------------------------------------------------------------------
# Before training: room to save, and metadata that fits
# ---------------------------------------------------------------------------


def check_space(directory: str, checkpoint_bytes: int) -> None:
  """Refuses a checkpoint directory that cannot be written or cannot hold one more checkpoint
  (an object store's bucket has no free space to ask about)."""
  fileio.prepare_workdir(directory)
  if fileio.is_url(directory):
    return
  free = shutil.disk_usage(directory).free
  if free < checkpoint_bytes:
    raise UserError(f"{directory} has {free / 2**20:,.1f} MiB free but one checkpoint takes "
                    f"{checkpoint_bytes / 2**20:,.1f} MiB; free some space or choose another "
                    "--workdir")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}: metadata as dotted names."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def check_compatible(saved: Mapping[str, Any], current: Mapping[str, Any], *,
                     fixed: Iterable[str], free: Iterable[str], allow_changes: bool,
                     source: str, allow_hint: str) -> list[str]:
  """Whether a run with metadata `current` may continue from `saved`; the differences it accepts.

  Names are dotted paths into the metadata (`config.model.hidden_size`), or
  prefixes ending in '.' for whole sections. A difference in a `fixed` name
  (the model's shape, the tokenizer) is always refused; one in a `free` name
  (the mesh, the logging interval) never is; any other only with
  `allow_changes`, which `allow_hint` tells the user how to give. Names that
  only one side has (fields of another version) are not compared. `source`
  names what was saved, for the messages.
  """
  saved, current = flatten(saved), flatten(current)
  matches = lambda name, patterns: any(
      name == p or (p.endswith(".") and name.startswith(p)) for p in patterns)
  fixed, free = tuple(fixed), tuple(free)
  differences = sorted(name for name in saved.keys() & current.keys()
                       if saved[name] != current[name] and not matches(name, free))
  describe = lambda names: "; ".join(f"{name} is {saved[name]!r} there and {current[name]!r} here"
                                     for name in names)
  refused = [name for name in differences if matches(name, fixed)]
  if refused:
    raise ConfigError(f"{source} is of another model or tokenizer: {describe(refused)}. Continue "
                      "it with the same values, or start a new run in another --workdir")
  if differences and not allow_changes:
    raise ConfigError(f"{source} was made with a different config: {describe(differences)}. "
                      f"Run it with the same values, or give {allow_hint} to continue with the "
                      "new ones")
  return [describe([name]) for name in differences]
