"""A fake Hermes registry: records registrations, answers 200 (or a queued fault's status)."""

from __future__ import annotations

import json

from tests.fakes._http import FakeUpstream, Fault, RecordedRequest, Reply


class FakeHermes(FakeUpstream):
    def reply(self, request: RecordedRequest, fault: Fault) -> Reply:
        if fault.status:
            return Reply(fault.status, {"content-type": "application/json"}, b'{"error": "down"}')
        if request.method != "POST" or request.path != "/api/register":
            return Reply(404, {"content-type": "application/json"}, b'{"error": "not found"}')
        return Reply(200, {"content-type": "application/json"}, json.dumps({"success": True}).encode())
