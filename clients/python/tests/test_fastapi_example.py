"""The README's FastAPI example, run as written: its endpoint changes the data and the change
reaches every subscriber but the acting connection."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest
from fastapi.testclient import TestClient

from conftest import API_KEY
from support import REPO, Gateway, Subscriber, unique

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fastapi_app.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_endpoint_saves_and_broadcasts_to_all_but_the_acting_connection(
    gateway: Gateway, connect: Callable[[str], Subscriber], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the app pointed at the gateway, and a list watched by two tabs of alice and by bob
    monkeypatch.setenv("WSBRIDGE_BROADCAST_URL", gateway.http_url)
    monkeypatch.setenv("WSBRIDGE_API_KEY", API_KEY)
    example = load_example()
    list_id = unique("")
    alice = unique("alice")
    acting, other_tab, bob = connect(alice), connect(alice), connect(unique("bob"))
    for tab in (acting, other_tab, bob):
        tab.subscribe(f"list:{list_id}")
    # WHEN the acting tab changes an item through the app
    with TestClient(example.app) as http:
        response = http.put(
            f"/lists/{list_id}/items/7",
            json={"title": "milk", "done": True},
            headers={"X-Wsbridge-Connection": acting.connection_id},
        )
    # THEN the data changed and the other two were told
    assert response.status_code == 200
    assert response.json() == {"saved": True, "delivered": 2}
    assert example.LISTS[list_id]["7"].title == "milk"
    for tab in (other_tab, bob):
        envelope = tab.next_message()
        assert envelope["event"] == "item.updated"
        assert envelope["topic"] == f"list:{list_id}"
        assert envelope["data"] == {"id": "7", "title": "milk", "done": True}
    # AND the acting tab was not: the next thing it receives is a later message
    with TestClient(example.app) as http:
        http.put(f"/lists/{list_id}/items/8", json={"title": "eggs"})
    assert acting.next_message()["data"] == {"id": "8", "title": "eggs", "done": False}


def test_the_readme_shows_the_example_as_tested() -> None:
    assert f"```python\n{EXAMPLE.read_text()}```" in (REPO / "README.md").read_text()
