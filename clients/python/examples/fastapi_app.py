"""A FastAPI backend that changes data, then tells everyone watching it — except the tab
that made the change, which shows it already.

Each browser tab holds a WebSocket to the bridge, subscribed to `list:<id>`, and asks it
`{"action":"whoami"}` once for its connection id, which it sends with each change in the
`X-Wsbridge-Connection` header. Run it with
`WSBRIDGE_BROADCAST_URL=http://127.0.0.1:3000 uvicorn fastapi_app:app`
(and `WSBRIDGE_API_KEY` for an API-key stack; without it requests are signed with SigV4).
"""

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Optional

from fastapi import FastAPI, Header, Request
from pydantic import BaseModel

from wsbridge_client import AsyncClient, SigV4, WsbridgeError

log = logging.getLogger(__name__)


class Item(BaseModel):
    title: str
    done: bool = False


# The app's data; a real backend keeps it in its database.
LISTS: dict[str, dict[str, Item]] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One client for the app's life: it keeps its connections to the API open.
    url = os.environ["WSBRIDGE_BROADCAST_URL"]
    api_key = os.environ.get("WSBRIDGE_API_KEY")
    bridge = AsyncClient(url, api_key=api_key) if api_key else AsyncClient(url, auth=SigV4())
    async with bridge:
        app.state.bridge = bridge
        yield


app = FastAPI(lifespan=lifespan)


@app.put("/lists/{list_id}/items/{item_id}")
async def put_item(
    list_id: str,
    item_id: str,
    item: Item,
    request: Request,
    # The acting tab's connection id (from whoami); it only ever removes that one recipient.
    connection_id: Annotated[Optional[str], Header(alias="X-Wsbridge-Connection")] = None,
) -> dict[str, object]:
    # 1. Change the data.
    LISTS.setdefault(list_id, {})[item_id] = item
    # 2. Tell every other tab and device, the same user's included.
    bridge: AsyncClient = request.app.state.bridge
    try:
        report = await bridge.broadcast(
            topic=f"list:{list_id}",
            event="item.updated",
            data={"id": item_id, **item.model_dump()},
            exclude_connection=connection_id,
        )
    except WsbridgeError:
        # The change is saved either way; clients that missed the message refetch the list
        # when they reconnect.
        log.exception("item.updated not broadcast")
        return {"saved": True, "delivered": None}
    return {"saved": True, "delivered": report.delivered}
