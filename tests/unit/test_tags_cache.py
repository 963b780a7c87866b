"""GET /api/tags answers from a cached body: what this process writes is listed by the next
request, what another process writes within the revalidation interval, and requests that find
the cache stale share one look at the store."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Awaitable, Callable, Hashable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.api import models
from server import settings
from server.context import SETTINGS, STORE
from store.names import parse_name
from store.store import CONFIG_MEDIA_TYPE, MODEL_MEDIA, Store

Client = Callable[[web.Application], Awaitable[TestClient]]


class Clock:
    """A monotonic clock the test moves by hand: only the interval lets external changes in."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "models")
    add_model(store, "base")
    return store


@pytest.fixture
def clock() -> Clock:
    return Clock()


def add_model(store: Store, name: str) -> None:
    """What create and pull leave behind: blobs, then a manifest."""
    config = store.add_blob_bytes(b'{"model_family": "gemma3"}', CONFIG_MEDIA_TYPE)
    weights = store.add_blob_bytes(f"GGUF {name}".encode(), MODEL_MEDIA)
    store.write_manifest(parse_name(name), config, [weights])


async def serve(aiohttp_client: Client, store: Store, clock: Clock) -> TestClient:
    app = web.Application()
    app[SETTINGS] = settings.load({})
    app[STORE] = store
    app[models.TAGS] = models.TagsCache(store, clock)
    app.router.add_get("/api/tags", models.tags)
    app.router.add_post("/api/copy", models.copy)
    app.router.add_delete("/api/delete", models.delete)
    return await aiohttp_client(app)


async def listed(client: TestClient) -> list[str]:
    reply = await client.get("/api/tags")
    assert reply.status == 200
    return sorted(m["name"] for m in (await reply.json())["models"])


def copied_in_by_hand(store: Store) -> list[str]:
    """An Ollama user copying a manifest into the store behind the server's back; returns what
    /api/tags should list then."""
    target = store.manifest_path(parse_name("theirs"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store.manifest_path(parse_name("base")), target)
    return ["base:latest", "theirs:latest"]


def removed_by_hand(store: Store) -> list[str]:
    store.manifest_path(parse_name("base")).unlink()
    return []


async def test_tags_lists_the_models_with_their_details(aiohttp_client: Client, store: Store,
                                                         clock: Clock) -> None:
    client = await serve(aiohttp_client, store, clock)
    (model,) = (await (await client.get("/api/tags")).json())["models"]
    assert model["name"] == model["model"] == "base:latest"
    assert model["details"]["family"] == "gemma3"
    assert model["digest"] == store.read_manifest(parse_name("base")).digest  # type: ignore[union-attr]


def damaged_by_hand(store: Store, name: str, data: bytes) -> None:
    path = store.manifest_path(parse_name(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def test_damaged_manifests_are_left_out_and_the_rest_is_listed(
        aiohttp_client: Client, store: Store, clock: Clock) -> None:
    damaged_by_hand(store, "config-a-number", b'{"schemaVersion":2,"config":0,"layers":[]}')
    not_an_object = store.add_blob_bytes(b"[1, 2]", CONFIG_MEDIA_TYPE)
    damaged_by_hand(store, "config-blob-a-list", orjson.dumps(
        {"schemaVersion": 2, "config": not_an_object.to_json(), "layers": []}))
    client = await serve(aiohttp_client, store, clock)
    assert await listed(client) == ["base:latest"]


async def test_a_damaged_manifest_can_be_deleted(aiohttp_client: Client, store: Store,
                                                 clock: Clock) -> None:
    damaged_by_hand(store, "no-config", b'{"schemaVersion":2,"layers":[]}')
    client = await serve(aiohttp_client, store, clock)
    assert (await client.delete("/api/delete", json={"model": "no-config"})).status == 200
    assert not store.manifest_path(parse_name("no-config")).exists()
    assert await listed(client) == ["base:latest"]


async def test_a_model_written_by_this_process_is_listed_by_the_next_request(
        aiohttp_client: Client, store: Store, clock: Clock) -> None:
    client = await serve(aiohttp_client, store, clock)
    assert await listed(client) == ["base:latest"]
    add_model(store, "fresh")  # as /api/create and /api/pull write it; the clock stands still
    assert await listed(client) == ["base:latest", "fresh:latest"]


async def test_a_copy_is_listed_by_the_next_request(aiohttp_client: Client, store: Store,
                                                    clock: Clock) -> None:
    client = await serve(aiohttp_client, store, clock)
    assert await listed(client) == ["base:latest"]
    reply = await client.post("/api/copy", json={"source": "base", "destination": "twin"})
    assert reply.status == 200
    assert await listed(client) == ["base:latest", "twin:latest"]


async def test_a_deleted_model_leaves_the_list_with_the_next_request(
        aiohttp_client: Client, store: Store, clock: Clock) -> None:
    add_model(store, "doomed")
    client = await serve(aiohttp_client, store, clock)
    assert await listed(client) == ["base:latest", "doomed:latest"]
    assert (await client.delete("/api/delete", json={"model": "doomed"})).status == 200
    assert await listed(client) == ["base:latest"]


async def test_within_the_interval_the_cached_list_is_served(aiohttp_client: Client,
                                                             store: Store, clock: Clock) -> None:
    client = await serve(aiohttp_client, store, clock)
    assert await listed(client) == ["base:latest"]
    copied_in_by_hand(store)
    clock.now += models.TagsCache.REVALIDATE_S / 2
    assert await listed(client) == ["base:latest"]


@pytest.mark.parametrize("change", [copied_in_by_hand, removed_by_hand])
async def test_a_change_by_another_process_is_listed_after_the_interval(
        aiohttp_client: Client, store: Store, clock: Clock,
        change: Callable[[Store], list[str]]) -> None:
    client = await serve(aiohttp_client, store, clock)
    assert await listed(client) == ["base:latest"]
    now_listed = change(store)
    clock.now += models.TagsCache.REVALIDATE_S
    assert await listed(client) == now_listed


async def test_requests_that_find_the_cache_stale_share_one_look_at_the_store(
        aiohttp_client: Client, store: Store, clock: Clock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    looks: list[Hashable] = []
    fingerprint = store.fingerprint

    def look() -> Hashable:
        looks.append(fingerprint())
        return looks[-1]

    monkeypatch.setattr(store, "fingerprint", look)
    client = await serve(aiohttp_client, store, clock)
    lists = await asyncio.gather(*(listed(client) for _ in range(20)))
    assert lists == [["base:latest"]] * 20
    assert len(looks) == 1


def test_every_manifest_write_and_removal_moves_the_generation(store: Store) -> None:
    seen = [store.generation]
    add_model(store, "other")
    seen.append(store.generation)
    store.copy_manifest(parse_name("other"), parse_name("twin"))
    seen.append(store.generation)
    store.write_manifest_bytes(parse_name("pulled"),
                               store.manifest_path(parse_name("base")).read_bytes())
    seen.append(store.generation)
    store.delete_manifest(parse_name("twin"))
    seen.append(store.generation)
    assert seen == sorted(set(seen))


def test_the_fingerprint_stays_while_nothing_changes(store: Store) -> None:
    assert store.fingerprint() == store.fingerprint()


def test_the_fingerprint_moves_when_a_manifest_is_edited_in_place(store: Store) -> None:
    before = store.fingerprint()
    path = store.manifest_path(parse_name("base"))
    with open(path, "ab") as f:  # same file, same inode: only its size and mtime tell
        f.write(b" ")
    assert store.fingerprint() != before


def test_the_fingerprint_moves_when_a_blob_arrives(store: Store) -> None:
    before = store.fingerprint()
    store.add_blob_bytes(b"a config that came after its manifest", CONFIG_MEDIA_TYPE)
    assert store.fingerprint() != before
