"""Policy reload without a restart: on SIGHUP and when a policy file changes.

:class:`PolicyHolder` is the policy stage the pipeline holds: it delegates every decision to
the current engine (one attribute read per call). :class:`PolicyReloader` re-reads the policy
parts of the configuration (``policies:`` and ``policy:`` of the main file, and every file in
``policy.files``), builds a complete new engine, and only then swaps it in, so a request sees
either the old policy or the new one, never a mix. A bad edit (YAML, Cedar, schema, an unknown
upstream) keeps the old engine; the outcome says why, naming the file and line.

Only the policy parts are reloaded: the other keys of the main file (upstreams, auth, ...) are
read to validate it, compared with the running configuration, and otherwise ignored; changing
them needs a restart, and the outcome says so. ``policy.user_attributes`` is the exception
among the policy parts: the token endpoint reads it too, so a reload that changes it is refused
(restart instead).

Watching is a poll of each watched file's (mtime, size, inode) every few seconds: no extra
dependency, and it sees editors that replace a file by renaming another onto it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bastion.config.loader import load_config
from bastion.config.model import Settings
from bastion.config.policy import policy_settings_errors, rule_errors
from bastion.core.errors import ConfigError
from bastion.core.records import Decision, InboundCall, Principal
from bastion.core.stages import PolicyEngine
from bastion.policy.engine import CedarPolicy
from bastion.policy.loader import load_policy

log = logging.getLogger("bastion.policy")
POLL_INTERVAL = 2.0  # seconds between two looks at the watched files
SETTLE_INTERVAL = 0.2  # a changed file is read once it stayed the same this long
_RESTART_NOTE = "other configuration changes need a restart"

Signature = tuple[int, int, int] | None  # (mtime_ns, size, inode); None: missing or unreadable


class PolicyHolder:
    """The policy stage: the current engine, swapped whole on reload."""

    __slots__ = ("engine",)

    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine

    def decide(self, principal: Principal, call: InboundCall) -> Decision:
        return self.engine.decide(principal, call)


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    accepted: bool
    trigger: str  # "SIGHUP", or the file whose change started the reload
    detail: str  # what is now in force, or why the edit was refused (file:line)
    restart_needed: bool = False  # the main file changed outside policies/policy too

    def message(self) -> str:
        if not self.accepted:
            return f"policy reload ({self.trigger}) refused, the previous policy stays: {self.detail}"
        note = (
            f"; the configuration file also changed outside policies/policy: {_RESTART_NOTE}"
            if self.restart_needed
            else f" (only policies/policy are reloaded; {_RESTART_NOTE})"
        )
        return f"policy reloaded ({self.trigger}): {self.detail}{note}"


def _signature(path: Path) -> Signature:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _describe(engine: PolicyEngine) -> str:
    if isinstance(engine, CedarPolicy):
        rules, policies = len({e.rule_id for e in engine.compiled.entries}), len(engine.compiled.entries)
        return f"{rules} rule{'s' * (rules != 1)} ({policies} Cedar polic{'ies' if policies != 1 else 'y'})"
    return "no policy configured (every call is allowed)"


def _policy_errors(merged: Settings) -> list[str]:
    """The checks bastion.yaml's validation makes on policies, against the running upstreams."""
    names = [u.name for u in merged.upstreams]
    errors = policy_settings_errors(merged.policy, names, merged.auth.scopes)
    for i, rule in enumerate(merged.policies):
        problems = rule_errors(rule, names, merged.auth.scopes, merged.policy.user_attributes)
        errors.extend(f"policies[{i}]: {e}" for e in problems)
    return errors


class PolicyReloader:
    """Re-reads the policy of ``settings`` (and of ``config_path``, when given) into ``holder``."""

    def __init__(
        self,
        holder: PolicyHolder,
        settings: Settings,
        *,
        config_path: Path | None,
        env: Mapping[str, str],
        base_dir: Path | None = None,
        notify: Callable[[ReloadOutcome], None] = lambda outcome: None,
    ) -> None:
        self.holder = holder
        self._running = settings  # what was started: its upstreams and auth stay
        self._current = settings  # the running settings with the policy now in force
        self._config_path = config_path
        self._env = env
        self._base_dir = base_dir
        self._notify = notify
        self._lock = asyncio.Lock()
        self._seen = self.snapshot()

    def watched(self) -> list[Path]:
        files = [self._config_path] if self._config_path is not None else []
        for name in self._current.policy.files:
            path = Path(name)
            files.append(path if self._base_dir is None or path.is_absolute() else self._base_dir / name)
        return files

    def snapshot(self) -> dict[Path, Signature]:
        return {path: _signature(path) for path in self.watched()}

    def changed(self) -> Path | None:
        """The first watched file that changed since the last (attempted) load, if any."""
        now = self.snapshot()
        return next((p for p, sig in now.items() if self._seen.get(p) != sig), None)

    def reload(self, trigger: str) -> ReloadOutcome:
        """Build the new engine and swap it in; synchronous (run it off the event loop)."""
        before = self.snapshot()
        try:
            merged, restart = self._merged()
            engine = load_policy(merged, base_dir=self._base_dir)
        except ConfigError as exc:
            self._seen = before  # the next change retries; this one is not reported again
            return ReloadOutcome(False, trigger, str(exc))
        self.holder.engine = engine  # the swap: one attribute, after the engine is complete
        self._current = merged
        # files that policy.files now names for the first time are watched from here on
        self._seen = {p: before[p] if p in before else _signature(p) for p in self.watched()}
        return ReloadOutcome(True, trigger, _describe(engine), restart_needed=restart)

    def _merged(self) -> tuple[Settings, bool]:
        """The running settings with the policy parts of the configuration file as it is now."""
        if self._config_path is None:
            return self._current, False
        fresh = load_config(self._config_path, self._env)
        if fresh.policy.user_attributes != self._running.policy.user_attributes:
            # the token endpoint puts the declared attributes in tokens: both change together
            raise ConfigError(
                f"{self._config_path}: policy.user_attributes changed: restart Bastion to apply it"
            )
        merged = self._running.model_copy(update={"policies": fresh.policies, "policy": fresh.policy})
        errors = _policy_errors(merged)
        if errors:
            raise ConfigError(f"{self._config_path}: " + "; ".join(errors))
        ignored = {"policies", "policy"}
        restart = fresh.model_dump(exclude=ignored) != self._running.model_dump(exclude=ignored)
        return merged, restart

    async def reload_now(self, trigger: str) -> ReloadOutcome:
        """Reload (one at a time), log the outcome and report it."""
        async with self._lock:
            outcome = await asyncio.to_thread(self.reload, trigger)
        if outcome.accepted:
            log.log(logging.WARNING if outcome.restart_needed else logging.INFO, "%s", outcome.message())
        else:
            log.error("%s", outcome.message())
        self._notify(outcome)
        return outcome

    async def watch(self, interval: float = POLL_INTERVAL) -> None:
        """Reload whenever a watched file changes; runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                path = await asyncio.to_thread(self.changed)
                if path is not None:
                    await self._settled()
                    await self.reload_now(f"{path} changed")
            except Exception:
                log.exception("policy file watch failed")

    async def _settled(self, pause: float = SETTLE_INTERVAL, tries: int = 10) -> None:
        """Wait until the files stop changing (an editor or a deploy still writing them), so a
        half-written file is not reported as a bad edit."""
        last = await asyncio.to_thread(self.snapshot)
        for _ in range(tries):
            await asyncio.sleep(pause)
            now = await asyncio.to_thread(self.snapshot)
            if now == last:
                return
            last = now

    @property
    def watching(self) -> bool:
        """Whether there is a file to watch (else only SIGHUP can reload)."""
        return bool(self.watched())


__all__ = ["POLL_INTERVAL", "PolicyHolder", "PolicyReloader", "ReloadOutcome"]
