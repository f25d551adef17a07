"""The policy stage: pure, synchronous (Principal, InboundCall) → Decision."""
