"""The serving process's log path: records emitted on the event loop reach the log thread in batches, each batch
written with one call; nothing waits longer than ``BATCH_DELAY_S``, and nothing is lost at exit."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import queue
import threading
import time

from rhetor.server import run
from rhetor.server.observe import JsonFormatter


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def pipeline() -> tuple[logging.Logger, run._Handoff, logging.handlers.QueueListener, CountingStream]:
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    batches: queue.SimpleQueue[list[logging.LogRecord]] = queue.SimpleQueue()
    listener = run._BatchListener(batches, handler)
    handoff = run._Handoff(batches)
    logger = logging.Logger(f"test-handoff-{id(stream)}")
    logger.addHandler(handoff)
    listener.start()
    return logger, handoff, listener, stream


def lines(stream: CountingStream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def wait_for(stream: CountingStream, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(stream.getvalue().splitlines()) < n:
        assert time.monotonic() < deadline, stream.getvalue()
        time.sleep(0.005)


async def test_records_of_one_loop_turn_are_written_together_and_soon() -> None:
    logger, _, listener, stream = pipeline()
    try:
        started = time.monotonic()
        for i in range(50):
            logger.info("request %d", i, extra={"fields": {"n": i}})
        await asyncio.sleep(0)
        assert stream.getvalue() == ""  # still waiting for the batch delay: nothing handed over yet
        await asyncio.sleep(run.BATCH_DELAY_S * 3)
        await asyncio.to_thread(wait_for, stream, 50)
        assert time.monotonic() - started < 2.0
        assert [e["msg"] for e in lines(stream)] == [f"request {i}" for i in range(50)]
        assert [e["n"] for e in lines(stream)] == list(range(50))
        assert stream.writes == 1
    finally:
        listener.stop()


async def test_a_full_batch_goes_at_once_and_the_message_is_fixed_when_emitted() -> None:
    logger, _, listener, stream = pipeline()
    try:
        args = ["before"]
        logger.info("value %s", args)
        args[0] = "after"  # a caller changing an argument after the call must not change the line
        for i in range(run.BATCH_MAX - 1):
            logger.info("filler %d", i)
        await asyncio.to_thread(wait_for, stream, run.BATCH_MAX)  # with no loop turn: the batch was full
        assert lines(stream)[0]["msg"] == "value ['before']"
    finally:
        listener.stop()


def test_records_emitted_off_the_event_loop_go_at_once() -> None:
    logger, _, listener, stream = pipeline()
    try:
        logger.warning("from a plain thread")
        wait_for(stream, 1)
        other = threading.Thread(target=logger.error, args=("from another thread",))
        other.start()
        other.join()
        wait_for(stream, 2)
        assert [e["level"] for e in lines(stream)] == ["WARNING", "ERROR"]
    finally:
        listener.stop()


async def test_flush_at_exit_writes_what_waits() -> None:
    logger, handoff, listener, stream = pipeline()
    logger.info("the last line before exit")
    handoff.flush()
    listener.stop()  # what serve() does after uvicorn returns
    assert [e["msg"] for e in lines(stream)] == ["the last line before exit"]


def test_serving_settings_freeze_the_heap_collect_young_objects_less_often_and_skip_unwritten_record_fields(
        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import gc

    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))  # restored after the test
    threshold = gc.get_threshold()
    try:
        run._tune_for_serving()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (run.GC_THRESHOLD_0, threshold[1] * 2, threshold[2] * 2)
        logger, handoff, listener, stream = pipeline()
        logger.warning("tuned", extra={"fields": {"k": 1}})
        handoff.flush()
        listener.stop()
        line = json.loads(stream.getvalue())
        assert (line["msg"], line["k"], line["level"]) == ("tuned", 1, "WARNING")  # the JSON line is unchanged
        records: list[logging.LogRecord] = []
        capture = logging.Logger("test-tuned")
        capture.addHandler(type("Capture", (logging.Handler,), {"emit": lambda self, r: records.append(r)})())
        capture.info("m")
        (record,) = records
        assert record.process is None and record.thread is None and record.processName is None
        assert (record.pathname, record.funcName) == ("(unknown file)", "(unknown function)")  # no stack walk
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


class _FactoryRecord(logging.LogRecord):
    """A record class a ``logging.setLogRecordFactory`` would install."""


def test_the_handed_over_copy_leaves_the_callers_record_as_it_was() -> None:
    """Other handlers of the same record (a test's caplog, an error tracker grouping by message template) still see
    the template and its arguments; a record factory's own class is kept in the copy."""
    batches: queue.SimpleQueue[list[logging.LogRecord]] = queue.SimpleQueue()
    handoff = run._Handoff(batches)
    plain = logging.LogRecord("rhetor.x", logging.INFO, __file__, 1, "took %d ms", (7,), None)
    plain.fields = {"n": 1}  # type: ignore[attr-defined]
    custom = _FactoryRecord("rhetor.x", logging.INFO, __file__, 2, "from %s", ("factory",), None)
    for record in (plain, custom):
        handoff.handle(record)  # off the event loop: handed over at once
    sent = [r for batch in (batches.get_nowait(), batches.get_nowait()) for r in batch]
    assert [(r.msg, r.args) for r in sent] == [("took 7 ms", None), ("from factory", None)]
    assert [type(r) for r in sent] == [logging.LogRecord, _FactoryRecord]
    assert sent[0] is not plain and sent[1] is not custom
    assert (plain.msg, plain.args, custom.msg, custom.args) == ("took %d ms", (7,), "from %s", ("factory",))
    assert sent[0].fields == {"n": 1} and sent[0].created == plain.created and sent[0].lineno == 1  # type: ignore[attr-defined]
