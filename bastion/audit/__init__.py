"""The audit stage: closed noun.verb vocabulary, the recorder (store + JSONL sinks), chain verify."""

from bastion.audit.chain import VerifyResult, verify, verify_store
from bastion.audit.events import EVENTS
from bastion.audit.recorder import AuditRecorder

__all__ = ["EVENTS", "AuditRecorder", "VerifyResult", "verify", "verify_store"]
