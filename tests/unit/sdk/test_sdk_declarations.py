"""Declaring functions and workers: the names of inngest-py, validated early."""

from __future__ import annotations

from typing import Any

import pytest

from sdk_python import Client, Context, ContextSync, Function, TriggerEvent


def test_decorating_async_and_sync_handlers() -> None:
    client = Client(app_id="crm", target="localhost:1")

    @client.create_function(fn_id="contacts-import", trigger=TriggerEvent(event="api/x.uploaded"), retries=2)
    async def importer(ctx: Context) -> Any:
        return None

    @client.create_function(fn_id="sync-one", trigger=[TriggerEvent(event="a"), TriggerEvent(event="b")])
    def sync_one(ctx: ContextSync) -> Any:
        return None

    assert isinstance(importer, Function) and importer.is_async and importer.retries == 2
    assert importer.id == "contacts-import" and importer.triggers == (TriggerEvent(event="api/x.uploaded"),)
    assert not sync_one.is_async and sync_one.retries == 4 and len(sync_one.triggers) == 2
    worker = client.worker(functions=[importer, sync_one], concurrency=3)
    assert worker.concurrency == 3 and {fn.id for fn in worker.functions} == {"contacts-import", "sync-one"}


@pytest.mark.parametrize("retries", [-1, 101, True, 2.5])
def test_retries_out_of_range_are_refused(retries: Any) -> None:
    client = Client(app_id="crm", target="localhost:1")
    with pytest.raises(ValueError, match="retries"):
        client.create_function(fn_id="f", trigger=TriggerEvent(event="e"), retries=retries)


def test_a_worker_refuses_duplicate_ids_and_undecorated_functions() -> None:
    client = Client(app_id="crm", target="localhost:1")

    async def plain(ctx: Context) -> None:
        return None

    fn = client.create_function(fn_id="f", trigger=TriggerEvent(event="e"))(plain)
    with pytest.raises(ValueError, match="'f'"):
        client.worker(functions=[fn, fn])
    with pytest.raises(TypeError, match="create_function"):
        client.worker(functions=[plain])  # type: ignore[list-item]


def test_target_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_TARGET", "orch.internal:7000")
    assert Client(app_id="a").target == "orch.internal:7000"
    assert Client(app_id="a", target="here:1").target == "here:1"
    monkeypatch.delenv("ORCHESTRATOR_TARGET")
    assert Client(app_id="a").target == "localhost:50051"
